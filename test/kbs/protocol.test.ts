// The KBS v0 wire: every request shape the kbs-types generations libkrun used produce (written from the
// documented shapes), the session cookie, HTTP-level refusals, and malformed bodies (fast-check): the server
// answers 400 naming the field and stays up.
import { expect } from 'chai';
import fc from 'fast-check';
import { request } from 'node:http';
import { caToWire, policyToJson, sessionCookie } from '../../src/kbs/wire.js';
import { SimulatedPlatform } from '../../src/sev/sev-sim.js';
import { ADMIN_TOKEN, startTestKbs, testDigest, type TestKbs } from './harness.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: Record<string, unknown> | undefined;
}

describe('kbs: the wire protocol', () => {
  let kbs: TestKbs;
  let platform: SimulatedPlatform;
  before(async () => {
    kbs = await startTestKbs();
    platform = new SimulatedPlatform(kbs.identity);
    await kbs.client.register(ADMIN_TOKEN, { workloadId: 'w', launchDigest: testDigest(), policy: 3, passphrase: 'p' });
  });
  after(() => kbs.close());

  async function call(method: string, path: string, body?: string | object, headers: Record<string, string> = {}): Promise<Reply> {
    const res = await fetch(`${kbs.url}${path}`, {
      method,
      headers: { 'content-type': 'application/json; charset=utf-8', accept: 'application/json', ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, headers: Object.fromEntries(res.headers), json: text ? (JSON.parse(text) as Record<string, unknown>) : undefined };
  }
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

  const c = () => kbs.identity.chain;
  /** SevRequest as libkrun builds it: certificates as byte arrays, CA certificates padded to serde's 1600 bytes. */
  const sevRequest = (workloadId = 'w') => ({
    build: { version: { major: platform.build.apiMajor, minor: platform.build.apiMinor }, build: platform.build.build },
    chain: {
      ca: { ask: caToWire(c().ask), ark: caToWire(c().ark) },
      sev: { pdh: [...c().pdh.bytes], pek: [...c().pek.bytes], oca: [...c().oca.bytes], cek: [...c().cek.bytes] },
    },
    workload_id: workloadId,
  });
  const evidence = () => ({ measure: new Array(32).fill(1), mnonce: new Array(16).fill(2) });

  describe('register_workload', () => {
    it('takes tee_config as reference-kbs sends it (a JSON string), as an object, or not at all (policy 0)', async () => {
      const base = { launch_measurement: testDigest().toString('hex'), passphrase: 'p' };
      expect(
        (
          await call(
            'POST',
            '/kbs/v0/register_workload',
            { ...base, workload_id: 'r1', tee_config: '{"flags":{"bits":63},"minfw":{"major":0,"minor":0}}' },
            admin,
          )
        ).status,
      ).to.equal(200);
      expect(
        (
          await call(
            'POST',
            '/kbs/v0/register_workload',
            { ...base, workload_id: 'r2', tee_config: { flags: { bits: 1 }, minfw: { major: 0, minor: 0 } } },
            admin,
          )
        ).status,
      ).to.equal(200);
      expect((await call('POST', '/kbs/v0/register_workload', { ...base, workload_id: 'r3' }, admin)).status).to.equal(200);
      const policies = await Promise.all(
        ['r1', 'r2', 'r3'].map(async (id) => (await call('POST', '/kbs/v0/auth', { version: '0.0.0', tee: 'sev', 'extra-params': sevRequest(id) })).json!),
      );
      expect(policies.map((p) => (p['extra-params'] as { start: { policy: unknown } }).start.policy)).to.deep.equal([
        policyToJson(63),
        policyToJson(1),
        policyToJson(0),
      ]);
    });

    it('refuses a bad digest, policy, passphrase or id with 400 naming the field', async () => {
      const good = {
        workload_id: 'r4',
        launch_measurement: 'ab'.repeat(32),
        tee_config: '{"flags":{"bits":1},"minfw":{"major":0,"minor":0}}',
        passphrase: 'p',
      };
      const cases: [object, string][] = [
        [{ ...good, launch_measurement: 'ab' }, 'body.launch_measurement'],
        [{ ...good, tee_config: '{"flags":{"bits":64},"minfw":{"major":0,"minor":0}}' }, 'tee_config.flags.bits'],
        [{ ...good, tee_config: '{"flags":{},"minfw":{"major":0,"minor":0}}' }, 'tee_config.flags.bits'],
        [{ ...good, tee_config: '{"flags":{"bits":1}}' }, 'tee_config.minfw'],
        [{ ...good, tee_config: 'not json' }, 'tee_config'],
        [{ ...good, passphrase: 'x'.repeat(513) }, 'body.passphrase'],
        [{ ...good, passphrase: 'é'.repeat(300) }, 'body.passphrase'],
        [{ ...good, passphrase: 'a\u0000b' }, 'body.passphrase'],
        [{ ...good, workload_id: 'a b' }, 'body.workload_id'],
        [{ ...good, workload_id: undefined }, 'body.workload_id'],
      ];
      for (const [body, field] of cases) {
        const r = await call('POST', '/kbs/v0/register_workload', body, admin);
        expect(r.status, field).to.equal(400);
        expect(r.json!.error).to.equal('malformed');
        expect(r.json!.detail, field).to.match(new RegExp(`^${field.replace(/\./g, '\\.')}\\b`));
      }
    });
  });

  describe('auth', () => {
    it('answers extra-params in the form it was sent: a JSON string (kbs-types <= 0.5) or an object (0.7+)', async () => {
      const asString = await call('POST', '/kbs/v0/auth', { version: '0.0.0', tee: 'sev', 'extra-params': JSON.stringify(sevRequest()) });
      const asObject = await call('POST', '/kbs/v0/auth', { version: '0.1.0', tee: 'sev', 'extra-params': sevRequest() });
      expect([asString.status, asObject.status]).to.deep.equal([200, 200]);
      expect(asString.json!['extra-params']).to.be.a('string');
      const start = JSON.parse(asString.json!['extra-params'] as string) as { id: string; start: { cert: number[]; session: Record<string, number[]> } };
      expect(start.id).to.equal(asString.json!.nonce);
      expect(start.start.cert).to.have.length(2084);
      expect(Object.fromEntries(Object.entries(start.start.session).map(([k, v]) => [k, v.length]))).to.deep.equal({
        nonce: 16,
        wrap_tk: 32,
        wrap_iv: 16,
        wrap_mac: 32,
        policy_mac: 32,
      });
      expect(asObject.json!['extra-params']).to.be.an('object');
    });

    it('sets session_id as a cookie libkrun can scrape (name=value before the first ;)', async () => {
      const r = await call('POST', '/kbs/v0/auth', { version: '0.0.0', tee: 'sev', 'extra-params': sevRequest() });
      const cookie = String(r.headers['set-cookie']);
      expect(cookie).to.match(/^session_id=[0-9a-f]{32}; Path=\/kbs\/v0; HttpOnly$/);
      expect(cookie.split(';')[0]!.split('=')[1]).to.equal(r.json!.nonce);
    });

    it('takes CA certificates at their own size or padded with zeros to 1600 bytes; other padding is refused', async () => {
      const req = sevRequest();
      req.chain.ca.ark = [...c().ark.bytes];
      expect((await call('POST', '/kbs/v0/auth', { version: '0.0.0', tee: 'sev', 'extra-params': req })).status).to.equal(200);
      req.chain.ca.ark = caToWire(c().ark);
      req.chain.ca.ark[1599] = 1;
      const r = await call('POST', '/kbs/v0/auth', { version: '0.0.0', tee: 'sev', 'extra-params': req });
      expect([r.status, r.json!.detail]).to.deep.equal([400, 'extra-params.chain.ca.ark: non-zero bytes after the 832-byte certificate']);
    });

    it('names the field of a malformed request', async () => {
      const req = sevRequest();
      const cases: [unknown, string][] = [
        [{ version: '0.0.0', tee: 'snp', 'extra-params': req }, 'body.tee'],
        [{ version: '0.0.0', tee: 'sev' }, 'body.extra-params'],
        [{ version: '0.0.0', tee: 'sev', 'extra-params': '{' }, 'extra-params'],
        [{ version: '0.0.0', tee: 'sev', 'extra-params': { ...req, build: { version: { major: 1 }, build: 2 } } }, 'extra-params.build.version.minor'],
        [
          { version: '0.0.0', tee: 'sev', 'extra-params': { ...req, chain: { ...req.chain, sev: { ...req.chain.sev, pdh: req.chain.sev.pdh.slice(1) } } } },
          'extra-params.chain.sev.pdh',
        ],
        [
          {
            version: '0.0.0',
            tee: 'sev',
            'extra-params': { ...req, chain: { ...req.chain, sev: { ...req.chain.sev, pek: [256, ...req.chain.sev.pek.slice(1)] } } },
          },
          'extra-params.chain.sev.pek.0',
        ],
        [
          { version: '0.0.0', tee: 'sev', 'extra-params': { ...req, chain: { ...req.chain, sev: { ...req.chain.sev, pdh: req.chain.sev.pek } } } },
          'extra-params.chain',
        ],
        [[1, 2], 'body'],
        ['"x"', 'body'],
      ];
      for (const [body, field] of cases) {
        const r = await call('POST', '/kbs/v0/auth', typeof body === 'string' ? body : (body as object));
        expect(r.status, field).to.equal(400);
        expect(String(r.json!.detail), field).to.satisfy((d: string) => d.startsWith(`${field}:`) || d.startsWith(`${field} `));
      }
    });
  });

  describe('attest', () => {
    async function session(): Promise<string> {
      const r = await call('POST', '/kbs/v0/auth', { version: '0.0.0', tee: 'sev', 'extra-params': sevRequest() });
      return String(r.headers['set-cookie']).split(';')[0]!;
    }

    it('takes every tee-pubkey form and tee-evidence as a string or an object (a wrong measurement is then 403)', async () => {
      const pubkeys = [
        { kty: '', alg: '', k: '' },
        { alg: '', 'k-mod': '', 'k-exp': '' },
        { kty: '', alg: '', n: '', e: '' },
        { kty: 'RSA', alg: 'RSA1_5', n: 'AQAB', e: 'AQAB' },
        '',
      ];
      for (const pubkey of pubkeys) {
        for (const tee of [JSON.stringify(evidence()), evidence()]) {
          const r = await call('POST', '/kbs/v0/attest', { 'tee-pubkey': pubkey, 'tee-evidence': tee }, { cookie: await session() });
          expect([r.status, r.json!.error]).to.deep.equal([403, 'measurement-mismatch']);
        }
      }
    });

    it('finds session_id among other cookies; a malformed one counts as none', async () => {
      const cookie = await session();
      const r = await call('POST', '/kbs/v0/attest', { 'tee-evidence': evidence() }, { cookie: `theme=dark; ${cookie}; lang=en` });
      expect(r.json!.error).to.equal('measurement-mismatch');
      expect(sessionCookie(`a=b;session_id=${'0'.repeat(32)}`)).to.equal('0'.repeat(32));
      expect(sessionCookie('session_id=../../etc')).to.equal(undefined);
      expect((await call('POST', '/kbs/v0/attest', { 'tee-evidence': evidence() }, { cookie: 'session_id=xyz' })).json!.error).to.equal('no-session');
    });

    it('refuses short evidence naming the field, and that ends the session', async () => {
      const cookie = await session();
      const r = await call('POST', '/kbs/v0/attest', { 'tee-evidence': { measure: [1, 2], mnonce: new Array(16).fill(0) } }, { cookie });
      expect([r.status, r.json!.detail]).to.deep.equal([400, 'tee-evidence.measure: must NOT have fewer than 32 items']);
      expect((await call('POST', '/kbs/v0/attest', { 'tee-evidence': evidence() }, { cookie })).json!.error).to.equal('session-used');
    });
  });

  describe('HTTP', () => {
    it('unknown path 404, wrong method 405 with Allow, a workload id that is not percent-encoding 400', async () => {
      expect((await call('GET', '/kbs/v0/nothing')).status).to.equal(404);
      expect((await call('GET', '/')).status).to.equal(404);
      const r = await call('GET', '/kbs/v0/auth');
      expect([r.status, r.headers.allow]).to.deep.equal([405, 'POST']);
      expect((await call('POST', '/kbs/v0/key/w', {})).status).to.equal(405);
      expect((await call('GET', '/kbs/v0/key/%zz')).status).to.equal(400);
    });

    it('a body over the limit is 413, whether declared or streamed, and the server goes on', async () => {
      const big = JSON.stringify({ pad: 'x'.repeat(300 * 1024) });
      expect((await call('POST', '/kbs/v0/auth', big)).status).to.equal(413);
      const streamed = await new Promise<number>((resolve, reject) => {
        const req = request(`${kbs.url}/kbs/v0/auth`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on('error', reject);
        for (let i = 0; i < 40; i++) req.write('x'.repeat(8192));
        req.end();
      });
      expect(streamed).to.equal(413);
      expect((await call('POST', '/kbs/v0/auth', { version: '0.0.0', tee: 'sev', 'extra-params': sevRequest() })).status).to.equal(200);
    });

    it('a body that is not JSON is 400', async () => {
      const r = await call('POST', '/kbs/v0/register_workload', '{"workload_id":', admin);
      expect([r.status, r.json]).to.deep.equal([400, { error: 'malformed', detail: 'body: not JSON' }]);
    });
  });

  describe('malformed input (property)', () => {
    const byteArrayMutation = fc.record({
      field: fc.constantFrom('pdh', 'pek', 'oca', 'cek'),
      index: fc.nat({ max: 3000 }),
      value: fc.oneof(
        fc.integer({ min: -1000, max: -1 }),
        fc.integer({ min: 256, max: 1e9 }),
        // A double can be a byte (0, 1, ... 255, and -0 which JSON writes as 0): those are no mutation.
        fc.double().filter((d) => !(Number.isInteger(d) && d >= 0 && d <= 255)),
        fc.string(),
        fc.constant(null),
        fc.boolean(),
      ),
      truncate: fc.boolean(),
    });

    it('byte arrays with a value that is not a byte, or the wrong length: 400 naming the certificate', async () => {
      await fc.assert(
        fc.asyncProperty(byteArrayMutation, async ({ field, index, value, truncate }) => {
          const req = sevRequest();
          const array = req.chain.sev[field as 'pdh'] as unknown[];
          if (truncate) array.length = index % array.length;
          else array[index % array.length] = value;
          const r = await call('POST', '/kbs/v0/auth', { version: '0.0.0', tee: 'sev', 'extra-params': req });
          expect(r.status).to.equal(400);
          expect(String(r.json!.detail)).to.match(new RegExp(`^extra-params\\.chain\\.sev\\.${field}`));
        }),
        { numRuns: 60 },
      );
    });

    it('arbitrary JSON and arbitrary text on every endpoint: 400 (401 for attest without a session), never a crash', async () => {
      const bodies = fc.oneof(
        fc.json(),
        fc.string(),
        fc.jsonValue().map((v) => JSON.stringify({ version: '0.0.0', tee: 'sev', 'extra-params': v })),
        fc.jsonValue().map((v) => JSON.stringify({ 'tee-evidence': v })),
      );
      await fc.assert(
        fc.asyncProperty(bodies, fc.constantFrom('register_workload', 'auth', 'attest'), async (body, endpoint) => {
          const r = await call('POST', `/kbs/v0/${endpoint}`, body, endpoint === 'register_workload' ? admin : {});
          // attest checks its session first: a JSON body without one is 401, anything else 400.
          expect(r.status).to.be.oneOf(endpoint === 'attest' ? [400, 401] : [400]);
        }),
        { numRuns: 150 },
      );
      expect((await call('POST', '/kbs/v0/auth', { version: '0.0.0', tee: 'sev', 'extra-params': sevRequest() })).status).to.equal(200);
    });
  });
});
