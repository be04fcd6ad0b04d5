// End to end on loopback: a sev-sim platform launches a guest, the VMM side uses the KBS client, the key broker
// decides. The right launch gets the passphrase into the guest's secret page; every wrong one is refused with
// its status and reason, and the audit log says why.
import { expect } from 'chai';
import { KbsClient, KbsClientError, type KbsSession } from '../../src/kbs/client.js';
import { attestJson, authJson, parseChallenge } from '../../src/kbs/wire.js';
import { measuredLaunch, SEV_SECRET_PAGE } from '../../src/sev/launch.js';
import { encodeMeasurement, parseMeasurement } from '../../src/sev/measurement.js';
import { PolicyBit } from '../../src/sev/policy.js';
import { SevSimulator, SimulatedPlatform } from '../../src/sev/sev-sim.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { SevFirmwareError } from '../../src/sev/status.js';
import { ADMIN_TOKEN, startTestKbs, testDigest, testImage, type TestKbs } from './harness.js';

const POLICY = PolicyBit.NODBG | PolicyBit.NOKS;
const PASSPHRASE = 'correct horse battery staple';

async function refusal(promise: Promise<unknown>): Promise<KbsClientError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof KbsClientError) return e;
    throw e;
  }
  expect.fail('expected the key broker to refuse');
}

describe('kbs: auth -> attest -> key with a sev-sim launch', () => {
  let kbs: TestKbs;
  let platform: SimulatedPlatform;
  let other: SimulatedIdentity;
  before(async () => {
    kbs = await startTestKbs();
    platform = new SimulatedPlatform(kbs.identity);
    other = SimulatedIdentity.generate({ caBits: 2048 });
  });
  after(() => kbs.close());

  const register = (workloadId: string, digest = testDigest(), policy = POLICY) =>
    kbs.client.register(ADMIN_TOKEN, { workloadId, launchDigest: digest, policy, passphrase: PASSPHRASE });
  const auth = (workloadId: string, chain = kbs.identity.chain) => kbs.client.auth(workloadId, platform.platformStatus(), chain);

  /** The VMM's launch: LAUNCH_START with the KBS's session, measure, attest + key, inject. */
  async function launch(session: KbsSession, variant = 0, policy = session.launch.policy) {
    const image = testImage(variant);
    const result = await measuredLaunch({
      backend: new SevSimulator(platform, { warn: () => undefined }),
      image,
      policy,
      session: { godh: session.launch.godh, session: session.launch.session },
      secret: (measurement) => session.secretFor(measurement),
    });
    return { result, image };
  }

  /** auth as a peer speaking HTTP itself: the session and the cookie the server set. */
  async function rawAuth(workloadId: string) {
    const a = await kbs.client.send('auth', 'POST', '/auth', authJson(workloadId, platform.platformStatus(), kbs.identity.chain, false));
    return { launch: parseChallenge(KbsClient.expectOk('auth', a)), cookie: [a.headers['set-cookie'] ?? []].flat()[0]!.split(';')[0]! };
  }

  const lastAudit = () => kbs.auditLines().at(-1)!;

  it('the registered launch gets the passphrase, which opens in the sev-sim secret page', async () => {
    await register('w-good');
    const session = await auth('w-good');
    expect(session.launch.policy).to.equal(POLICY);
    const { result, image } = await launch(session);
    expect(result.secretInjected).to.equal(true);
    const page = Buffer.from(image.memory.read(SEV_SECRET_PAGE, 512));
    expect(page.subarray(0, PASSPHRASE.length).toString()).to.equal(PASSPHRASE);
    expect(page.subarray(PASSPHRASE.length).every((b) => b === 0)).to.equal(true);
    expect(
      kbs
        .auditLines()
        .filter((l) => l.workload === 'w-good')
        .map((l) => l.reason),
    ).to.deep.equal(['registered', 'session', 'measurement-verified', 'secret-released']);
  });

  it('string-form extra-params and tee-evidence (kbs-types before 0.7) get string-form answers and the same secret', async () => {
    await register('w-strings');
    const session = await kbs.client.auth('w-strings', platform.platformStatus(), kbs.identity.chain, true);
    const { image } = await launch(session);
    expect(Buffer.from(image.memory.read(SEV_SECRET_PAGE, PASSPHRASE.length)).toString()).to.equal(PASSPHRASE);
  });

  it('a launch of another image (wrong digest) is refused at attest: 403 measurement-mismatch', async () => {
    await register('w-digest');
    const e = await refusal(launch(await auth('w-digest'), 7));
    expect([e.step, e.status, e.reason]).to.deep.equal(['attest', 403, 'measurement-mismatch']);
    expect(lastAudit()).to.include({ step: 'attest', workload: 'w-digest', verdict: 'refused', reason: 'measurement-mismatch' });
  });

  it('a policy the platform cannot meet is refused at auth (403 policy-unmet); a launch under another policy fails at LAUNCH_START', async () => {
    const needsNewerFirmware = (POLICY | (0x7f << 16)) >>> 0;
    await register('w-policy', testDigest(), needsNewerFirmware);
    const e = await refusal(auth('w-policy'));
    expect([e.step, e.status, e.reason]).to.deep.equal(['auth', 403, 'policy-unmet']);
    expect(lastAudit()).to.include({ step: 'auth', workload: 'w-policy', reason: 'policy-unmet' });

    await register('w-policy2');
    const session = await auth('w-policy2');
    try {
      await launch(session, 0, POLICY | PolicyBit.NOSEND);
      expect.fail('LAUNCH_START accepted a session made for another policy');
    } catch (err) {
      expect(err).to.be.instanceOf(SevFirmwareError);
      expect((err as Error).message).to.match(/policy_mac/);
    }
  });

  it('a chain under an ARK that is not a trust anchor is refused (403 chain-untrusted); a broken link (403 chain-invalid)', async () => {
    await register('w-chain');
    let e = await refusal(auth('w-chain', other.chain));
    expect([e.step, e.status, e.reason]).to.deep.equal(['auth', 403, 'chain-untrusted']);
    expect(lastAudit()).to.include({ reason: 'chain-untrusted', workload: 'w-chain' });
    e = await refusal(auth('w-chain', { ...kbs.identity.chain, pdh: other.chain.pdh }));
    expect([e.status, e.reason]).to.deep.equal([403, 'chain-invalid']);
    expect(e.message).to.match(/PEK -> PDH/);
  });

  it('an unregistered workload is refused at auth: 404 unknown-workload', async () => {
    const e = await refusal(auth('w-nobody'));
    expect([e.step, e.status, e.reason]).to.deep.equal(['auth', 404, 'unknown-workload']);
  });

  it('an expired session is refused: 401 session-expired', async () => {
    await register('w-expiry');
    const session = await auth('w-expiry');
    kbs.clock.skew = 10 * 60_000;
    try {
      const e = await refusal(launch(session));
      expect([e.step, e.status, e.reason]).to.deep.equal(['attest', 401, 'session-expired']);
    } finally {
      kbs.clock.skew = 0;
    }
    expect(lastAudit()).to.include({ reason: 'session-expired', workload: 'w-expiry' });
  });

  it('a replayed attest is refused (409 attest-replayed) and ends the session (409 session-used)', async () => {
    await register('w-replay');
    const session = await auth('w-replay');
    let measurement: Uint8Array | undefined;
    await measuredLaunch({
      backend: new SevSimulator(platform, { warn: () => undefined }),
      image: testImage(),
      policy: session.launch.policy,
      session: { godh: session.launch.godh, session: session.launch.session },
      secret: async (m) => {
        measurement = m;
        await session.attest(m);
        return undefined;
      },
    });
    let e = await refusal(session.attest(measurement!));
    expect([e.step, e.status, e.reason]).to.deep.equal(['attest', 409, 'attest-replayed']);
    e = await refusal(session.key());
    expect([e.step, e.status, e.reason]).to.deep.equal(['key', 409, 'session-used']);
  });

  it('a session is single-use: a second key is refused (409 session-used)', async () => {
    await register('w-reuse');
    const session = await auth('w-reuse');
    await launch(session);
    const e = await refusal(session.key());
    expect([e.step, e.status, e.reason]).to.deep.equal(['key', 409, 'session-used']);
    expect(lastAudit()).to.include({ step: 'key', reason: 'session-used', workload: 'w-reuse' });
  });

  it('a reordered step is refused: key before attest (409 not-attested), and the session is over', async () => {
    await register('w-order');
    const session = await auth('w-order');
    const e = await refusal(session.key());
    expect([e.step, e.status, e.reason]).to.deep.equal(['key', 409, 'not-attested']);
    const fake = encodeMeasurement({ measure: Buffer.alloc(32), mnonce: Buffer.alloc(16) });
    expect((await refusal(session.attest(fake))).reason).to.equal('session-used');
  });

  it('a session is bound to its workload: the key of another workload is refused (403 workload-mismatch)', async () => {
    await register('w-bound');
    await register('w-victim');
    const { launch: start, cookie } = await rawAuth('w-bound');
    await measuredLaunch({
      backend: new SevSimulator(platform, { warn: () => undefined }),
      image: testImage(),
      policy: start.policy,
      session: { godh: start.godh, session: start.session },
      secret: async (m) => {
        KbsClient.expectOk('attest', await kbs.client.send('attest', 'POST', '/attest', attestJson(parseMeasurement(m), false), { cookie }));
        return undefined;
      },
    });
    const a = await kbs.client.send('key', 'GET', '/key/w-victim', undefined, { cookie });
    const e = await refusal(Promise.resolve().then(() => KbsClient.expectOk('key', a)));
    expect([e.status, e.reason]).to.deep.equal([403, 'workload-mismatch']);
  });

  it('attest and key without a session, or with an unknown one, are refused: 401', async () => {
    const body = { 'tee-pubkey': {}, 'tee-evidence': { measure: new Array(32).fill(0), mnonce: new Array(16).fill(0) } };
    let e = await refusal(kbs.client.send('attest', 'POST', '/attest', body).then((a) => KbsClient.expectOk('attest', a)));
    expect([e.status, e.reason]).to.deep.equal([401, 'no-session']);
    e = await refusal(
      kbs.client.send('key', 'GET', '/key/w-good', undefined, { cookie: `session_id=${'ab'.repeat(16)}` }).then((a) => KbsClient.expectOk('key', a)),
    );
    expect([e.status, e.reason]).to.deep.equal([401, 'unknown-session']);
  });

  it('registration needs the admin token: none or a wrong one is 401 unauthorized', async () => {
    const r = { workloadId: 'w-admin', launchDigest: testDigest(), policy: POLICY, passphrase: PASSPHRASE };
    let e = await refusal(kbs.client.register('not-the-token', r));
    expect([e.step, e.status, e.reason]).to.deep.equal(['register', 401, 'unauthorized']);
    const a = await kbs.client.send('register', 'POST', '/register_workload', { workload_id: 'w-admin', launch_measurement: '00'.repeat(32), passphrase: 'x' });
    e = await refusal(Promise.resolve().then(() => KbsClient.expectOk('register', a)));
    expect([e.status, e.reason]).to.deep.equal([401, 'unauthorized']);
    expect(lastAudit()).to.include({ step: 'register', verdict: 'refused', reason: 'unauthorized' });
  });

  it('the audit log holds no passphrase, no session id, no admin token', async () => {
    await register('w-audit');
    const { cookie } = await rawAuth('w-audit');
    const text = kbs
      .auditLines()
      .map((l) => JSON.stringify(l))
      .join('\n');
    expect(text).to.not.include(PASSPHRASE);
    expect(text).to.not.include(ADMIN_TOKEN);
    expect(text).to.not.include(cookie.split('=')[1]!);
    expect(kbs.auditLines().every((l) => l.simulated === true && typeof l.remote === 'string')).to.equal(true);
  });
});
