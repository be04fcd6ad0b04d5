// `ts-vmm boot` refuses what it cannot run before any vCPU worker starts, and fails cleanly however
// early a boot fails once they have started: one line, exit status 1, never a native abort.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { cliEntry } from '../../src/sys/project-paths.js';

interface Outcome {
  status: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

function tsVmm(args: string[]): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliEntry(), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (status, signal) => resolve({ status, signal, stderr }));
  });
}

describe('ts-vmm boot: arguments and early failures', function () {
  this.timeout(60_000);
  let dir: string;
  let notAKernel: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-boot-args-'));
    notAKernel = join(dir, 'not-a-kernel');
    writeFileSync(notAKernel, 'garbage\n');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const refusals: [string, string[], RegExp][] = [
    ['a missing kernel', ['--kernel', '/nonexistent/bzImage'], /^ts-vmm: --kernel \/nonexistent\/bzImage: no such file\n$/],
    ['a missing initrd', ['--kernel', '/dev/null', '--initrd', '/nonexistent/initrd'], /^ts-vmm: --initrd \/nonexistent\/initrd: no such file\n$/],
    [
      'more vCPUs than the MADT can name',
      ['--kernel', '/dev/null', '--cpus', '255'],
      /option '--cpus <n>' argument '255' is invalid\. 255 vCPUs is more than the 254 supported/,
    ],
    [
      'more memory than one region view holds',
      ['--kernel', '/dev/null', '--mem', '1000000'],
      /option '--mem <MiB>' argument '1000000' is invalid\. 1000000 MiB is outside 64\.\.\d+ MiB/,
    ],
    [
      'a key broker without a workload id',
      ['--kernel', '/dev/null', '--tee', 'sev-sim', '--sim-state', '/nonexistent', '--tee-kbs', 'http://127.0.0.1:9'],
      /^ts-vmm: --tee-kbs needs --tee-workload-id \(the workload's name at the key broker\)\n$/,
    ],
    [
      'a key broker and owner files at once',
      [
        '--kernel',
        '/dev/null',
        '--tee',
        'sev-sim',
        '--sim-state',
        '/nonexistent',
        '--tee-kbs',
        'http://127.0.0.1:9',
        '--tee-workload-id',
        'w',
        '--tee-secret-dir',
        '/tmp',
      ],
      /^ts-vmm: --tee-kbs replaces --tee-godh, --tee-session and --tee-secret-dir\n$/,
    ],
    ['less memory than a kernel needs', ['--kernel', '/dev/null', '--mem', '63'], /63 MiB is outside 64\.\./],
    [
      'an unknown trace category',
      ['--kernel', '/dev/null', '--trace', 'pio,irq'],
      /--trace pio,irq: unknown category "irq" \(one or more of exits,pio,mmio,virtio\)/,
    ],
    ['a trace file without --trace', ['--kernel', '/dev/null', '--trace-file', '/tmp/x'], /^ts-vmm: --trace-file needs --trace\n$/],
  ];
  for (const [what, args, message] of refusals) {
    it(`refuses ${what} in one line, exit status 1`, async () => {
      const outcome = await tsVmm(['boot', ...args]);
      expect(outcome.stderr).to.match(message);
      expect(outcome.stderr.trimEnd().split('\n')).to.have.length(1);
      expect(outcome).to.include({ status: 1, signal: null });
    });
  }

  it('names the key broker step that failed: a broker nobody answers for', async () => {
    const state = join(dir, 'sim');
    expect((await tsVmm(['sev', 'sim-init', '--sim-state', state, '--ca-bits', '2048'])).status).to.equal(0);
    const outcome = await tsVmm([
      'boot',
      '--kernel',
      '/dev/null',
      '--tee',
      'sev-sim',
      '--sim-state',
      state,
      '--tee-kbs',
      'http://127.0.0.1:9',
      '--tee-workload-id',
      'w',
    ]);
    expect(outcome.stderr).to.equal('ts-vmm: kbs auth: connection: connect ECONNREFUSED 127.0.0.1:9\n');
    expect(outcome).to.include({ status: 1, signal: null });
  });

  it('fails a boot whose kernel is refused after the vCPU workers started: exit 1, ten times in a row', async () => {
    // Teardown used to terminate workers still loading koffi, which aborted the process (about one
    // run in three with four workers).
    for (let run = 0; run < 10; run++) {
      const outcome = await tsVmm(['boot', '--kernel', notAKernel, '--cpus', '4']);
      expect(outcome.stderr, `run ${run}`).to.equal('ts-vmm: not a Linux kernel: neither a bzImage (no "HdrS" setup header at 0x202) nor an ELF vmlinux\n');
      expect(outcome, `run ${run}`).to.include({ status: 1, signal: null });
    }
  });
});
