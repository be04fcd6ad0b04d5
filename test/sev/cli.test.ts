import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { measuredLaunch, SEV_SECRET_PAGE } from '../../src/sev/launch.js';
import { readLaunchSession } from '../../src/sev/owner-files.js';
import { parseSecretTable } from '../../src/sev/secret.js';
import { SevSimulator } from '../../src/sev/sev-sim.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { runInProcess } from '../cli/in-process.js';
import { itWithVectors, vectorPath } from './vectors.js';

/** `ts-vmm ...args` in-process; what it printed on stdout, then stderr. */
async function run(...args: string[]): Promise<{ status: number; out: string }> {
  const r = await runInProcess(...args);
  return { status: r.status, out: r.out + r.err };
}

describe('sev: ts-vmm sev commands', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-sev-cli-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('owner workflow against sev-sim: pin, verify, session, launch, measurement verify, secret build', async () => {
    const state = path.join(dir, 'state');
    expect((await run('sev', 'sim-init', '--sim-state', state, '--ca-bits', '2048')).status).to.equal(0);
    const verified = await run('sev', 'verify', '--full', path.join(state, 'chain.cert'));
    expect(verified.status).to.equal(0);
    expect(verified.out.split('\n').filter((l) => l.startsWith('ok')).length).to.equal(7);
    expect((await run('sev', 'session', '--dir', dir, '--name', 'g', path.join(state, 'chain.cert'), '0x3')).status).to.equal(0);

    // The VMM side: launch a small image with the session files, as `ts-vmm boot --tee sev-sim` does.
    const memory = GuestMemory.shared([{ guestAddress: 0, size: 0x40_0000 }]);
    const firmware = Buffer.alloc(0x1000, 0x90);
    memory.write(0x10_0000, firmware);
    const session = readLaunchSession(path.join(dir, 'g_godh.b64'), path.join(dir, 'g_session.b64'));
    const sim = new SevSimulator(SimulatedIdentity.load(state), { warn: () => undefined });
    let injectedFrom = '';
    const result = await measuredLaunch({
      backend: sim,
      policy: 3,
      session,
      image: { memory, regions: [{ kind: 'firmware', guestAddress: 0x10_0000, length: firmware.length }] },
      secret: async (blob) => {
        const m = path.join(dir, 'measurement.bin');
        writeFileSync(m, blob);
        writeFileSync(path.join(dir, 'fw.bin'), firmware);
        const common = (policy: string) => [
          '--api-major',
          '0',
          '--api-minor',
          '24',
          '--build-id',
          '15',
          '--policy',
          policy,
          '--tik',
          path.join(dir, 'g_tik.bin'),
        ];
        const digest = createHash('sha256').update(firmware).digest('base64');
        const ok = await run('sev', 'measurement', 'verify', ...common('3'), '--launch-digest', digest, '--measurement', m);
        expect(ok.status, ok.out).to.equal(0);
        const otherPolicy = await run('sev', 'measurement', 'verify', ...common('1'), '--launch-digest', digest, '--measurement', m);
        expect(otherPolicy.status).to.equal(1);
        expect(otherPolicy.out).to.contain('does NOT match');
        const otherDigest = await run(
          'sev',
          'measurement',
          'verify',
          ...common('3'),
          '--launch-digest',
          Buffer.alloc(32).toString('base64'),
          '--measurement',
          m,
        );
        expect(otherDigest.status).to.equal(1);
        const built = await run('sev', 'measurement', 'build', ...common('3'), '--launch-digest', digest, '--launch-measure-blob', m);
        expect(built.out.trim()).to.equal(Buffer.from(blob).toString('base64'));
        writeFileSync(path.join(dir, 'secret.txt'), 'open sesame');
        const s = await run(
          'sev',
          'secret',
          'build',
          '--tik',
          path.join(dir, 'g_tik.bin'),
          '--tek',
          path.join(dir, 'g_tek.bin'),
          '--launch-measure-blob',
          m,
          '--secret',
          `736869e5-84f0-4973-92ec-06879ce3da0b:${path.join(dir, 'secret.txt')}`,
          path.join(dir, 'h.bin'),
          path.join(dir, 'p.bin'),
        );
        expect(s.status, s.out).to.equal(0);
        injectedFrom = 'files';
        return { header: readFileSync(path.join(dir, 'h.bin')), payload: readFileSync(path.join(dir, 'p.bin')) };
      },
    });
    expect(result.secretInjected && injectedFrom).to.equal('files');
    expect(Buffer.from(parseSecretTable(memory.read(SEV_SECRET_PAGE, 64))[0]!.data).toString()).to.equal('open sesame');
  });

  it('reports a broken link with exit status 1', async () => {
    const state = path.join(dir, 'state');
    const chain = readFileSync(path.join(state, 'chain.cert'));
    chain[0x414 + 8 + 3]! ^= 1; // first signature of the PDH
    writeFileSync(path.join(dir, 'broken.cert'), chain);
    const r = await run('sev', 'verify', '--full', path.join(dir, 'broken.cert'));
    expect(r.status).to.equal(1);
    expect(r.out).to.contain('FAIL PEK -> PDH');
  });

  it('refuses bad arguments with a message naming them', async () => {
    expect((await run('sev', 'session', path.join(dir, 'state', 'pdh.cert'), '0x40')).out).to.contain('reserved bits');
    const r = await run(
      'sev',
      'measurement',
      'build',
      '--api-major',
      '1',
      '--api-minor',
      '0',
      '--build-id',
      '1',
      '--policy',
      '0',
      '--tik',
      'AAAA',
      '--nonce',
      'AAAAAAAAAAAAAAAAAAAAAA==',
      '--launch-digest',
      Buffer.alloc(32).toString('base64'),
    );
    expect(r.status).to.equal(1);
    expect(r.out).to.contain('--tik is 3 bytes, expected 16');
  });

  it('exits non-zero when the chain was not verified up to an ARK: a SEV chain alone proves nothing about the CEK', async () => {
    const state = path.join(dir, 'state');
    const sevChain = path.join(dir, 'sev-only.cert');
    expect((await run('sev', 'export', '--sim-state', state, sevChain)).status).to.equal(0);
    const alone = await run('sev', 'verify', '--sev', sevChain);
    expect(alone.status).to.equal(1);
    expect(alone.out).to.contain('FAIL ASK -> CEK (no ASK and ARK: give --ca or --full)');
    const full = path.join(dir, 'full.cert');
    expect((await run('sev', 'export', '-f', '--sim-state', state, full)).status).to.equal(0);
    const ca = path.join(dir, 'ca.cert');
    writeFileSync(ca, readFileSync(full).subarray(readFileSync(sevChain).length));
    const anchored = await run('sev', 'verify', '--sev', sevChain, '--ca', ca);
    expect(anchored.status, anchored.out).to.equal(0);
    expect(anchored.out).to.match(/ARK key id [0-9a-f]{32}/);
    // --oca replaces the chain's OCA, as sevctl's does: the PDH's own OCA verifies, another does not.
    const oca = path.join(dir, 'oca.cert');
    writeFileSync(oca, readFileSync(path.join(state, 'oca.cert')));
    expect((await run('sev', 'verify', '--sev', sevChain, '--ca', ca, '--oca', oca)).status).to.equal(0);
    expect((await run('sev', 'verify', '--sev', sevChain, '--ca', ca, '--oca', path.join(state, 'pek.cert'))).out).to.contain(
      '--oca is not an OCA certificate',
    );
  });

  it("makes a session from the SEV chain its own export writes, with sevctl's -n, and keeps TEK and TIK at mode 0600", async () => {
    const state = path.join(dir, 'state');
    const sevChain = path.join(dir, 'sev-only.cert');
    expect((await run('sev', 'export', '--sim-state', state, sevChain)).status).to.equal(0);
    writeFileSync(path.join(dir, 's_tek.bin'), 'old');
    chmodSync(path.join(dir, 's_tek.bin'), 0o644);
    const r = await run('sev', 'session', '--dir', dir, '-n', 's', sevChain, '1');
    expect(r.status, r.out).to.equal(0);
    for (const key of ['s_tek.bin', 's_tik.bin']) {
      expect(statSync(path.join(dir, key)).mode & 0o777, key).to.equal(0o600);
      expect(readFileSync(path.join(dir, key))).to.have.length(16);
    }
    const broken = readFileSync(sevChain);
    broken[0x414 + 8 + 3]! ^= 1;
    writeFileSync(path.join(dir, 'broken-sev.cert'), broken);
    expect((await run('sev', 'session', '--dir', dir, '-n', 'b', path.join(dir, 'broken-sev.cert'), '1')).out).to.contain(
      "the SEV chain's PEK -> PDH signature does not verify",
    );
  });

  it('decodes base64 strictly everywhere and never echoes a key it could not read', async () => {
    const common = ['--api-major', '1', '--api-minor', '0', '--build-id', '1', '--policy', '0', '--nonce', 'AAAAAAAAAAAAAAAAAAAAAA=='];
    const tik = Buffer.alloc(16, 7).toString('base64');
    const digest = Buffer.alloc(32).toString('base64');
    // Node's own decoder would drop the '!' and read 32 bytes.
    const lenient = await run('sev', 'measurement', 'build', ...common, '--tik', tik, '--launch-digest', `${digest.slice(0, 8)}!${digest.slice(8)}`);
    expect(lenient.status).to.equal(1);
    expect(lenient.out).to.contain('--launch-digest is not base64');
    const badTik = `${tik.slice(0, 5)}*${tik.slice(5)}`;
    const r = await run('sev', 'measurement', 'build', ...common, '--tik', badTik, '--launch-digest', digest);
    expect(r.out).to.contain('--tik is neither an existing file nor base64');
    expect(r.out).not.to.contain(badTik);
  });

  it('names the corrupt file of a sim state directory', async () => {
    const state = path.join(dir, 'corrupt-state');
    expect((await run('sev', 'sim-init', '--sim-state', state, '--ca-bits', '2048')).status).to.equal(0);
    writeFileSync(path.join(state, 'pek.key'), '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
    const r = await run('sev', 'status', '--sim-state', state);
    expect(r.status).to.equal(1);
    expect(r.out).to.match(/^ts-vmm: sev-sim state .*corrupt-state: pek\.key is corrupt \(.+\)\n$/);
  });

  it('shows and updates VMSA files as sevctl does, keeping every other byte', async () => {
    const file = path.join(dir, 'vmsa-ap');
    expect((await run('sev', 'vmsa', 'build', file, '--cpu', '1', '--userspace', 'krun')).status).to.equal(0);
    const before = readFileSync(file);
    expect(
      (await run('sev', 'vmsa', 'update', file, '--cpu', '1', '--userspace', 'krun', '--family', '25', '--model', '1', '--stepping', '1')).status,
    ).to.equal(0);
    const after = readFileSync(file);
    const changed = [...after.keys()].filter((i) => after[i] !== before[i]);
    expect(
      changed.every((i) => i >= 0x310 && i < 0x318),
      'only rdx changes',
    ).to.equal(true);
    const shown = await run('sev', 'vmsa', 'show', file);
    const state = JSON.parse(shown.out) as { rdx: string; cs: { selector: number; base: string } };
    expect(state.rdx).to.equal('0xa00f11');
    expect(state.cs).to.include({ selector: 0x9100, base: '0x91000' });
    writeFileSync(path.join(dir, 'short-vmsa'), Buffer.alloc(100));
    expect((await run('sev', 'vmsa', 'show', path.join(dir, 'short-vmsa'))).out).to.contain('a VMSA is 4096 bytes, not 100');
  });

  itWithVectors("measurement build and secret build agree with sevctl's tests", async () => {
    const d = (f: string) => vectorPath(`sevctl/tests/data/${f}`);
    const m = await run(
      'sev',
      'measurement',
      'build',
      '--api-major',
      '0x01',
      '--api-minor',
      '40',
      '--build-id',
      '40',
      '--policy',
      '0x03',
      '--tik',
      d('measurement/tik1.bin'),
      '--nonce',
      'wxP6tRHCFrFQWxsuqZA8QA==',
      '--firmware',
      d('OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9'),
    );
    expect(m.out.trim()).to.equal('oMDewIouJSpbpNRHj7Mk3p08H2dPZQdsZMU14qIymBnDE/q1EcIWsVBbGy6pkDxA');
    const es = await run(
      'sev',
      'measurement',
      'build',
      '--api-major',
      '1',
      '--api-minor',
      '49',
      '--build-id',
      '6',
      '--policy',
      '0x05',
      '--tik',
      d('measurement/tik1.bin'),
      '--launch-measure-blob',
      '/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny',
      '--firmware',
      d('OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9'),
      '--num-cpus',
      '4',
      '--vmsa-cpu0',
      d('vmsa0.bin'),
      '--vmsa-cpu1',
      d('vmsa1.bin'),
    );
    expect(es.out.trim()).to.equal('/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny');
    for (const cpu of ['0', '1']) {
      const v = await run(
        'sev',
        'vmsa',
        'build',
        path.join(dir, `vmsa${cpu}`),
        '--cpu',
        cpu,
        '--family',
        '25',
        '--model',
        '1',
        '--stepping',
        '1',
        '--userspace',
        'qemu',
        '--firmware',
        d('OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9'),
      );
      expect(v.status, v.out).to.equal(0);
      expect(readFileSync(path.join(dir, `vmsa${cpu}`))).to.deep.equal(readFileSync(d(`vmsa${cpu}.bin`)));
    }
    const s = await run(
      'sev',
      'secret',
      'build',
      '--tik',
      d('secret/tik1.bin'),
      '--tek',
      d('secret/tek1.bin'),
      '--launch-measure-blob',
      'TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS',
      '--iv',
      'rFR07U3TLH2YnsUj2SVZ7A==',
      '--secret',
      `736869e5-84f0-4973-92ec-06879ce3da0b:${d('secret/secret1.txt')}`,
      '--secret',
      `736869e5-aaaa-4973-92ec-06879ce3da0b:${d('secret/secret2.txt')}`,
      path.join(dir, 'vh'),
      path.join(dir, 'vp'),
    );
    expect(s.status).to.equal(0);
    expect(readFileSync(path.join(dir, 'vh')).toString('base64')).to.equal('AAAAAKxUdO1N0yx9mJ7FI9klWeyZ3r0dOEKHUOhIRqzGYYvTJgdMtBPL1nK6GD9aGET7Ng==');
    expect(readFileSync(path.join(dir, 'vp')).toString('base64')).to.equal(
      '0U3e5PcXv0UW+H4tSBFKObWYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCC+WWs332lpLNUX1ZI3YK7vYgtys4X+uGxEIlkIQ90v8/w8ZFmQMe',
    );
  });
});
