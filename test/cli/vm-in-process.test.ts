// `ts-vmm run`'s VM, inside the run's own process, is described by the `ts-vmm boot` arguments a VMM process of
// its own gets, read by the boot command's grammar: every field of a request arrives, a word the grammar refuses is
// an error (never a process exit), and an unreadable kernel is refused before any vCPU worker starts.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { parseBootArguments } from '../../src/cli/boot.js';
import { launchVmInProcess } from '../../src/cli/vm-in-process.js';
import { bootArguments } from '../../src/oci/vm-launch.js';
import type { VmRequest } from '../../src/oci/vm-request.js';

const request = (over: Partial<VmRequest> = {}): VmRequest => ({
  kernel: '/k/vmlinuz',
  initrd: ['/r/base.cpio', '/r/run.cpio'],
  cmdline: 'console=ttyS0 quiet',
  cpus: 3,
  memoryMiB: 384,
  disks: [
    { path: '/d/root.ext4', readonly: true },
    { path: '/d/data.img', readonly: false },
  ],
  vsock: { cid: 3, udsPath: '/run dir/vsock' },
  consoleOutput: () => undefined,
  ...over,
});

describe("ts-vmm run: the VM inside the run's own process", () => {
  it('reads every field of a request as `ts-vmm boot` would', () => {
    const options = parseBootArguments([...bootArguments(request()).slice(1), '--stats', '--trace', 'exits,mmio']);
    expect(options).to.include({ kernel: '/k/vmlinuz', cmdline: 'console=ttyS0 quiet', cpus: 3, mem: 384 });
    expect(options.initrd).to.deep.equal(['/r/base.cpio', '/r/run.cpio']);
    expect(options.disk).to.deep.equal(['/d/root.ext4,ro', '/d/data.img']);
    expect(options.vsock).to.equal('3,/run dir/vsock');
    expect(options.stats).to.equal(true);
    expect(options.trace).to.deep.equal(['exits', 'mmio']);
    expect(options.tee).to.equal(undefined);
  });

  it('reads a measured launch: the key broker, or a local owner with its policy and files', () => {
    const kbs = parseBootArguments(
      bootArguments(request({ tee: { kind: 'sev-sim', simState: '/s', kbs: { url: 'https://kbs:8080', workloadId: 'w1', ca: '/ca.pem' } } })).slice(1),
    );
    expect(kbs).to.include({ tee: 'sev-sim', simState: '/s', teeKbs: 'https://kbs:8080', teeWorkloadId: 'w1', teeKbsCa: '/ca.pem' });
    const owner = parseBootArguments(
      bootArguments(
        request({ tee: { kind: 'sev', owner: { policy: 0x5, godh: '/o/godh.b64', session: '/o/session.b64', secretDir: '/o/secret', secretTimeoutS: 7 } } }),
      ).slice(1),
    );
    expect(owner).to.include({
      tee: 'sev',
      teePolicy: 5,
      teeGodh: '/o/godh.b64',
      teeSession: '/o/session.b64',
      teeSecretDir: '/o/secret',
      teeSecretTimeout: 7,
    });
  });

  it('refuses what the grammar refuses with an error naming it', () => {
    expect(() => parseBootArguments(['--kernel', '/k', '--cpus', '0'])).to.throw(/--cpus/);
    expect(() => parseBootArguments(['--kernel', '/k', '--no-such-option'])).to.throw(/no-such-option/);
    expect(() => parseBootArguments(['--cpus', '1'])).to.throw(/--kernel/);
    expect(() => parseBootArguments(['--kernel', '/k', '--trace-file', '/t'])).to.throw('--trace-file needs --trace');
  });

  it('refuses a kernel or an initrd archive it cannot read before starting anything', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-vmm-in-process-'));
    try {
      writeFileSync(join(dir, 'initrd'), '');
      const launch = launchVmInProcess([], () => undefined);
      let failure: unknown;
      await launch(request({ kernel: join(dir, 'missing'), initrd: [join(dir, 'initrd')] })).catch((e: unknown) => {
        failure = e;
      });
      expect(String(failure)).to.include(`--kernel ${join(dir, 'missing')}: no such file`);
      failure = undefined;
      writeFileSync(join(dir, 'vmlinuz'), '');
      await launch(request({ kernel: join(dir, 'vmlinuz'), initrd: [join(dir, 'initrd'), join(dir, 'run.cpio')] })).catch((e: unknown) => {
        failure = e;
      });
      expect(String(failure)).to.include(`--initrd ${join(dir, 'run.cpio')}: no such file`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
