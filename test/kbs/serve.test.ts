// `ts-vmm kbs serve` as a process (bin/ts-vmm.js, after `npm run build`): it refuses to start without a trust
// anchor; `ts-vmm kbs register` talks to it; and a kill -9 in the middle of concurrent registrations loses no
// acknowledged one and leaves nothing half-written.
import { expect } from 'chai';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { KbsClient } from '../../src/kbs/client.js';
import { WorkloadStore } from '../../src/kbs/store.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { cliEntry } from '../../src/sys/project-paths.js';

function startServer(args: string[]): Promise<{ child: ChildProcess; url: string; banner: string }> {
  const child = spawn(process.execPath, [cliEntry(), 'kbs', 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr!.on('data', (c: Buffer) => {
      err += c.toString();
    });
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening on (http:\/\/[^,]+),/.exec(out);
      if (m && out.includes('\n')) resolve({ child, url: m[1]!, banner: out });
    });
    child.on('exit', (code) => reject(new Error(`kbs serve exited ${code}: ${err}`)));
  });
}

const exited = (child: ChildProcess) =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(undefined);
    else child.once('exit', resolve);
  });

describe('kbs: ts-vmm kbs serve as a process', function () {
  this.timeout(120_000);
  let dir: string;
  let sim: string;
  let token: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-kbs-serve-'));
    sim = path.join(dir, 'sim');
    SimulatedIdentity.generate({ caBits: 2048 }).save(sim);
    token = path.join(dir, 'token');
    writeFileSync(token, 'admin-secret\n', { mode: 0o600 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses to start without a trust anchor: one line, exit 2', () => {
    const r = spawnSync(
      process.execPath,
      [cliEntry(), 'kbs', 'serve', '--listen', '127.0.0.1:0', '--store', path.join(dir, 's0'), '--admin-token-file', token],
      { encoding: 'utf8' },
    );
    expect(r.status).to.equal(2);
    expect(r.stderr.trim().split('\n')).to.have.length(1);
    expect(r.stderr).to.match(/no trust anchor/);
  });

  it('calls a sev-sim anchor simulated; `kbs register` registers through it', async () => {
    const store = path.join(dir, 's1');
    const { child, url, banner } = await startServer(['--listen', '127.0.0.1:0', '--store', store, '--trust-ark', sim, '--admin-token-file', token]);
    try {
      expect(banner).to.match(/\(SIMULATED\)/);
      const pass = path.join(dir, 'pass');
      writeFileSync(pass, 'disk passphrase\n', { mode: 0o600 });
      const args = [
        'kbs',
        'register',
        '--url',
        url,
        '--admin-token-file',
        token,
        '--workload-id',
        'w1',
        '--launch-digest',
        'ab'.repeat(32),
        '--policy',
        '0x3',
        '--passphrase-file',
        pass,
      ];
      const ok = spawnSync(process.execPath, [cliEntry(), ...args], { encoding: 'utf8' });
      expect([ok.status, ok.stdout]).to.deep.equal([0, 'registered workload w1 (policy 0x3: NODBG|NOKS, min API 0.0)\n']);
      const bad = spawnSync(process.execPath, [cliEntry(), ...args.map((a) => (a === token ? pass : a))], { encoding: 'utf8' });
      expect([bad.status, bad.stderr]).to.deep.equal([1, 'ts-vmm: kbs register: HTTP 401 unauthorized: wrong admin token\n']);
    } finally {
      child.kill('SIGKILL');
      await exited(child);
    }
    const stored = await new WorkloadStore(store).get('w1');
    expect(stored?.passphrase, "the file's bytes exactly, as ts-vmm mkcw formats the disk with them").to.equal('disk passphrase\n');
    const audit = readFileSync(path.join(store, 'audit.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(audit.map((a) => [a.reason, a.simulated])).to.deep.equal([
      ['registered', true],
      ['unauthorized', true],
    ]);
    expect(readFileSync(path.join(store, 'audit.log'), 'utf8')).to.not.include('disk passphrase');
  });

  it('kill -9 during concurrent registrations: every acknowledged one is there after restart, files whole and 0600', async () => {
    const store = path.join(dir, 's2');
    const acknowledged = new Map<string, string>();
    let serial = 0;
    for (let round = 0; round < 4; round++) {
      const { child, url } = await startServer(['--listen', '127.0.0.1:0', '--store', store, '--trust-ark', sim, '--admin-token-file', token]);
      const client = new KbsClient({ url, timeoutMs: 5000 });
      let running = true;
      const worker = async () => {
        while (running) {
          const id = `w-${serial++}`;
          const passphrase = `pass-${id}-${'x'.repeat(serial % 200)}`;
          try {
            await client.register('admin-secret', { workloadId: id, launchDigest: Buffer.alloc(32, serial & 0xff), policy: 1, passphrase });
            acknowledged.set(id, passphrase);
          } catch {
            return; // the server is gone
          }
        }
      };
      const workers = Array.from({ length: 8 }, worker);
      await new Promise((r) => setTimeout(r, 150 + round * 70));
      child.kill('SIGKILL');
      running = false;
      await Promise.all(workers);
      await exited(child);
    }
    expect(acknowledged.size).to.be.greaterThan(20);
    // A restart cleans up temporary files of registrations cut short.
    const reopened = new WorkloadStore(store);
    for (const [id, passphrase] of acknowledged) expect((await reopened.get(id))?.passphrase, id).to.equal(passphrase);
    const files = readdirSync(path.join(store, 'workloads'));
    expect(files.every((f) => f.endsWith('.json'))).to.equal(true);
    for (const f of files) {
      const file = path.join(store, 'workloads', f);
      expect(statSync(file).mode & 0o777).to.equal(0o600);
      expect(() => JSON.parse(readFileSync(file, 'utf8'))).to.not.throw();
    }
  });
});
