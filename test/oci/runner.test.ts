// The run logic (boot to READY, exit status, signal forwarding, bounded teardown, early VM death) against a
// stand-in VM: the real guest agent as a host process talking over the Unix socket the vsock device would use.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { cliEntry } from '../../src/sys/project-paths.js';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { ensureGuestAgent } from '../../src/oci/guest-agent.js';
import { bootWorkload, RunError, runWorkload } from '../../src/oci/runner.js';
import type { VmLauncher } from '../../src/oci/vm-request.js';
import { bootArguments } from '../../src/oci/vm-launch.js';
import { agentVm as standIn, standInRun, type StandIn } from './stand-in-vm.js';

describe('run logic with a stand-in VM', function () {
  this.timeout(60000);
  let dir: string;
  let agent: string;
  let lastStandIn: StandIn | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-runner-'));
    agent = await ensureGuestAgent(join(dir, 'cache'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  beforeEach(() => {
    lastStandIn = undefined;
  });

  /** A "VM" that prints a console line and dies before any agent connects. */
  const dyingVm: VmLauncher = async (request) => {
    const child = spawn('/bin/sh', ['-c', 'echo "Kernel panic - not syncing: VFS: Unable to mount root fs"; exit 2'], { stdio: ['ignore', 'pipe', 'ignore'] });
    child.stdout.on('data', (d: Buffer) => request.consoleOutput(d));
    const exited = new Promise<{ ok: boolean; reason: string }>((resolve) => child.on('close', () => resolve({ ok: false, reason: 'the guest failed' })));
    return {
      exited,
      stop: () => {
        child.kill('SIGKILL');
      },
    };
  };

  const prepared = (name: string, args?: string[]) => standInRun(dir, name, args);
  const agentVm = () => {
    const vm = standIn(agent);
    lastStandIn = vm;
    return vm.launch;
  };

  function stdio(): { stdin: undefined; stdout: PassThrough; stderr: PassThrough; text: () => string } {
    const stdout = new PassThrough();
    const chunks: Buffer[] = [];
    stdout.on('data', (c: Buffer) => chunks.push(c));
    const stderr = new PassThrough();
    stderr.resume();
    return { stdin: undefined, stdout, stderr, text: () => Buffer.concat(chunks).toString() };
  }

  it("runs to the workload's exit status, stops the VM and cleans up, leaving no timer behind", async () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length;
    await Promise.resolve(); // mocha arms its own timer once the test has returned its promise
    const timersBefore = timers();
    const { run, cleaned } = prepared('exit', ['/bin/sh', '-c', 'echo hi; exit 7']);
    const io = stdio();
    const booted = await bootWorkload(run, agentVm(), io, { log: () => undefined });
    expect(await runWorkload(booted, io)).to.equal(7);
    expect(io.text()).to.equal('hi\n');
    expect(cleaned()).to.equal(true);
    // A grace timer left running would keep ts-vmm alive after the VM is gone.
    expect(timers(), 'timers of the run still armed').to.equal(timersBefore);
  });

  it('forwards SIGTERM to the workload', async () => {
    const { run } = prepared('term', ['/bin/sleep', '30']);
    const io = stdio();
    const booted = await bootWorkload(run, agentVm(), io, { log: () => undefined });
    const status = runWorkload(booted, io);
    setTimeout(() => process.emit('SIGTERM', 'SIGTERM'), 300);
    expect(await status).to.equal(143);
  });

  it('tears the VM down at a second SIGTERM when the workload ignores the first', async () => {
    const { run } = prepared('stubborn', ['/bin/sh', '-c', 'trap "" TERM; echo up; while :; do sleep 1; done']);
    const io = stdio();
    const booted = await bootWorkload(run, agentVm(), io, { log: () => undefined });
    const status = runWorkload(booted, io);
    setTimeout(() => process.emit('SIGTERM', 'SIGTERM'), 300);
    setTimeout(() => process.emit('SIGTERM', 'SIGTERM'), 600);
    const started = Date.now();
    expect(await status).to.equal(143);
    expect(Date.now() - started).to.be.lessThan(5000);
    expect(lastStandIn!.stops()).to.be.greaterThan(0);
  });

  it('reports a VM that dies before its agent connects, quoting the console', async () => {
    const { run } = prepared('dying');
    const io = stdio();
    await bootWorkload(run, dyingVm, io, { log: () => undefined }).then(
      () => expect.fail('booted'),
      (e: Error) => {
        expect(e).to.be.instanceOf(RunError);
        expect(e.message).to.match(/^the VM stopped before the guest agent started: the guest failed; last console lines:\nKernel panic/);
      },
    );
  });

  it('passes the VM to ts-vmm boot as disks and a vsock device', () => {
    const args = bootArguments({
      kernel: '/k',
      initrd: ['/i'],
      cmdline: 'quiet',
      cpus: 2,
      memoryMiB: 128,
      disks: [{ path: '/d.ext4', readonly: true }],
      vsock: { cid: 3, udsPath: '/run/v' },
      consoleOutput: () => undefined,
    });
    expect(args).to.deep.equal([
      'boot',
      '--kernel',
      '/k',
      '--initrd',
      '/i',
      '--cmdline',
      'quiet',
      '--cpus',
      '2',
      '--mem',
      '128',
      '--disk',
      '/d.ext4,ro',
      '--vsock',
      '3,/run/v',
    ]);
    expect(() =>
      bootArguments({
        kernel: '/k',
        initrd: ['/i'],
        cmdline: '',
        cpus: 1,
        memoryMiB: 64,
        disks: [{ path: '/a,b', readonly: false }],
        vsock: { cid: 3, udsPath: '/v' },
        consoleOutput: () => undefined,
      }),
    ).to.throw(/cannot contain a comma/);
  });

  it('passes a measured launch to ts-vmm boot: a key broker, or a local owner through files; boot knows every flag', () => {
    const base = {
      kernel: '/k',
      initrd: ['/i'],
      cmdline: '',
      cpus: 1,
      memoryMiB: 64,
      disks: [],
      vsock: { cid: 3, udsPath: '/v' },
      consoleOutput: () => undefined,
    };
    const kbs = bootArguments({ ...base, tee: { kind: 'sev', kbs: { url: 'https://kbs:8000', workloadId: 'w', ca: '/ca.pem', caChain: '/ask_ark.cert' } } });
    expect(kbs.slice(kbs.indexOf('--tee'))).to.deep.equal([
      '--tee',
      'sev',
      '--tee-kbs',
      'https://kbs:8000',
      '--tee-workload-id',
      'w',
      '--tee-kbs-ca',
      '/ca.pem',
      '--tee-ca-chain',
      '/ask_ark.cert',
    ]);
    const owner = bootArguments({
      ...base,
      tee: { kind: 'sev-sim', simState: '/sim', owner: { policy: 3, godh: '/g', session: '/s', secretDir: '/x', secretTimeoutS: 60 } },
    });
    expect(owner.slice(owner.indexOf('--tee'))).to.deep.equal([
      '--tee',
      'sev-sim',
      '--sim-state',
      '/sim',
      '--tee-policy',
      '0x3',
      '--tee-godh',
      '/g',
      '--tee-session',
      '/s',
      '--tee-secret-dir',
      '/x',
      '--tee-secret-timeout',
      '60',
    ]);
    const help = spawnSync(process.execPath, [cliEntry(), 'boot', '--help'], { encoding: 'utf8' }).stdout;
    for (const flag of [...kbs, ...owner].filter((a) => a.startsWith('--'))) expect(help, flag).to.contain(`${flag} `);
  });
});
