// The OCI runtime verbs as containerd's shim calls them, on the paths that need no VM: validation order,
// state handling, signalling only a verified monitor, and cleanup. Exit status 1 and one line for every error.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { dirname, join } from 'node:path';
import { processStartTime, RUNTIME_SPEC_VERSION, type ContainerRecord } from '../../src/oci/runtime-state.js';
import { cliEntry } from '../../src/sys/project-paths.js';
import { ensureGuestAgent } from '../../src/oci/guest-agent.js';
import { WorkloadIo } from '../../src/oci/workload-io.js';
import { entries, runCli, scratch, type Scratch } from './cli-process.js';

describe('ts-vmm create/state/kill/delete without a VM', () => {
  let s: Scratch;
  let root: string;
  beforeEach(() => {
    s = scratch('ts-vmm-cli-oci-');
    root = join(s.dir, 'root');
  });
  afterEach(() => rmSync(s.dir, { recursive: true, force: true }));

  it('create reports an invalid bundle first, before asking for KVM, and records nothing', async () => {
    const bundle = join(s.dir, 'not-a-bundle');
    mkdirSync(bundle);
    const r = await runCli(['create', '--root', root, '--bundle', bundle, 'c1'], { ...s.env, TS_VMM_LAB: 'force' });
    expect(r.stderr).to.equal(`ts-vmm: ${bundle}/config.json: no such file (is this an OCI bundle directory?)\n`);
    expect(r.status).to.equal(1);
    expect(entries(root)).to.deep.equal([]);
    expect(entries(join(s.dir, 'tmp'))).to.deep.equal([]);
  });
});

describe('ts-vmm create options', () => {
  let s: Scratch;
  beforeEach(() => {
    s = scratch('ts-vmm-cli-oci-');
  });
  afterEach(() => rmSync(s.dir, { recursive: true, force: true }));

  it('refuses --kernel without --modules rather than dropping it', async () => {
    const root = join(s.dir, 'root');
    const r = await runCli(['create', '--root', root, '--kernel', '/boot/vmlinuz', 'c1'], { ...s.env, TS_VMM_LAB: 'force' });
    expect(r.stderr).to.equal('ts-vmm: --kernel and --modules go together: a kernel needs its own modules\n');
    expect(r.status).to.equal(1);
    expect(entries(root)).to.deep.equal([]);
  });
});

describe('ts-vmm state/kill/delete of recorded containers', () => {
  let s: Scratch;
  let root: string;
  const sleepers = new Set<ChildProcess>();
  beforeEach(() => {
    s = scratch('ts-vmm-cli-oci-');
    root = join(s.dir, 'root');
  });
  afterEach(() => {
    for (const p of sleepers) p.kill('SIGKILL');
    rmSync(s.dir, { recursive: true, force: true });
  });

  /** A process standing in for a container's monitor or VMM: its pid and start time. */
  async function sleeper(): Promise<{ child: ChildProcess; pid: number; startTime: string }> {
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    sleepers.add(child);
    await once(child, 'spawn');
    return { child, pid: child.pid!, startTime: processStartTime(child.pid!)! };
  }

  function record(id: string, changes: Partial<ContainerRecord>): string {
    mkdirSync(join(root, id), { recursive: true });
    writeFileSync(
      join(root, id, 'state.json'),
      JSON.stringify({
        ociVersion: RUNTIME_SPEC_VERSION,
        id,
        status: 'creating',
        pid: 0,
        bundle: '/b',
        annotations: {},
        created: 'now',
        ...changes,
      }),
    );
    return join(root, id);
  }

  it('ps lists the monitor and the VMM while they run, as json and as a table, and nothing once stopped', async () => {
    const monitor = await sleeper();
    const vmm = await sleeper();
    record('c1', { status: 'running', pid: monitor.pid, pidStartTime: monitor.startTime, vmm: { pid: vmm.pid, startTime: vmm.startTime } });
    const json = await runCli(['--root', root, 'ps', '--format', 'json', 'c1'], s.env);
    expect(json.status, json.stderr).to.equal(0);
    expect(JSON.parse(json.stdout)).to.deep.equal([monitor.pid, vmm.pid]);
    const table = await runCli(['ps', '--root', root, 'c1'], s.env);
    expect(table.stdout).to.equal(`PID\tCMD\n${monitor.pid}\tsleep\n${vmm.pid}\tsleep\n`);
    monitor.child.kill('SIGKILL');
    await once(monitor.child, 'exit');
    expect(JSON.parse((await runCli(['--root', root, 'ps', '-f', 'json', 'c1'], s.env)).stdout)).to.deep.equal([]);
  });

  it('kill --all (as containerd sends it): KILL ends the monitor and the VMM; a stopped container is no error, as without --all it is', async () => {
    const monitor = await sleeper();
    const vmm = await sleeper();
    record('c1', { status: 'running', pid: monitor.pid, pidStartTime: monitor.startTime, vmm: { pid: vmm.pid, startTime: vmm.startTime } });
    const killed = await runCli(['--root', root, 'kill', '--all', 'c1', '9'], s.env);
    expect(killed.status, killed.stderr).to.equal(0);
    // The children may have ended (and been reaped) while the command ran.
    const endSignal = async (child: ChildProcess) => (child.exitCode !== null || child.signalCode !== null ? child.signalCode : (await once(child, 'exit'))[1]);
    expect(await endSignal(monitor.child)).to.equal('SIGKILL');
    expect(await endSignal(vmm.child)).to.equal('SIGKILL');
    record('c2', { status: 'stopped' });
    expect(await runCli(['--root', root, 'kill', '--all', 'c2', '9'], s.env)).to.include({ status: 0, stderr: '' });
    expect(await runCli(['--root', root, 'kill', 'c2', '9'], s.env)).to.include({
      status: 1,
      stderr: 'ts-vmm: container "c2" is stopped: nothing to signal\n',
    });
  });

  it('pause stops the VM process and resume lets it go on, as state reports; each refuses the wrong status', async () => {
    const monitor = await sleeper();
    const vmm = await sleeper();
    record('c1', { status: 'running', pid: monitor.pid, pidStartTime: monitor.startTime, vmm: { pid: vmm.pid, startTime: vmm.startTime } });
    const processState = (pid: number) => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
    const status = async () => JSON.parse((await runCli(['--root', root, 'state', 'c1'], s.env)).stdout) as { status: string; pid: number };
    expect((await runCli(['--root', root, 'resume', 'c1'], s.env)).stderr).to.equal('ts-vmm: container "c1" is running, not paused\n');
    const paused = await runCli(['--root', root, 'pause', 'c1'], s.env);
    expect(paused.status, paused.stderr).to.equal(0);
    expect(processState(vmm.pid)).to.equal('T');
    expect(await status()).to.include({ status: 'paused', pid: monitor.pid });
    expect((await runCli(['--root', root, 'pause', 'c1'], s.env)).stderr).to.equal('ts-vmm: container "c1" is paused, not running\n');
    expect((await runCli(['--root', root, 'resume', 'c1'], s.env)).status).to.equal(0);
    expect(processState(vmm.pid)).to.equal('S');
    expect((await status()).status).to.equal('running');
    // A paused container goes with delete --force like any other.
    await runCli(['--root', root, 'pause', 'c1'], s.env);
    expect((await runCli(['--root', root, 'delete', '--force', 'c1'], s.env)).status).to.equal(0);
    expect(existsSync(`/proc/${vmm.pid}`) && processState(vmm.pid) !== 'Z', 'the paused VM process is gone').to.equal(false);
  });

  it('state and delete name a directory without state.json; delete --force removes it', async () => {
    mkdirSync(join(root, 'bare'), { recursive: true });
    for (const args of [['state'], ['delete']]) {
      const r = await runCli([...args, '--root', root, 'bare'], s.env);
      expect(r.stderr).to.match(/^ts-vmm: container "bare" has no state: [^\n]*state.json is missing; ts-vmm delete --force bare removes it\n$/);
      expect(r.status).to.equal(1);
    }
    const r = await runCli(['delete', '--force', '--root', root, 'bare'], s.env);
    expect([r.status, r.stderr]).to.deep.equal([0, '']);
    expect(entries(root)).to.deep.equal([]);
  });

  it('state names corrupt state in one line; delete --force removes it', async () => {
    mkdirSync(join(root, 'bad'), { recursive: true });
    writeFileSync(join(root, 'bad', 'state.json'), '{"ociVersion": "1.2.0", "id": "b');
    const r = await runCli(['state', '--root', root, 'bad'], s.env);
    expect(r.stderr).to.match(/^ts-vmm: container "bad" has unreadable state: [^\n]*; ts-vmm delete --force bad removes it\n$/);
    expect(r.status).to.equal(1);
    expect((await runCli(['delete', '--force', '--root', root, 'bad'], s.env)).status).to.equal(0);
    expect(entries(root)).to.deep.equal([]);
  });

  it('delete --force of a container still creating (pid 0) signals nobody and removes it', async () => {
    record('c0', { status: 'creating', pid: 0 });
    // In a process group of its own with a bystander: kill(0, ...) would end both.
    const bystander = spawn(
      '/bin/sh',
      ['-c', `exec "$0" "$1" delete --force --root "$2" c0 & wait $!; echo "cli $?"; sleep 0.2; echo alive`, process.execPath, cliEntry(), root],
      { env: s.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    bystander.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    const [code, signal] = (await once(bystander, 'close')) as [number | null, NodeJS.Signals | null];
    expect([code, signal, out]).to.deep.equal([0, null, 'cli 0\nalive\n']);
    expect(entries(root)).to.deep.equal([]);
  });

  it('never signals a recorded pid whose start time is not the recorded one', async () => {
    const other = await sleeper();
    record('reused', { status: 'running', pid: other.pid, pidStartTime: `${other.startTime}1`, vmm: { pid: other.pid, startTime: `${other.startTime}2` } });
    expect((await runCli(['kill', '--root', root, 'reused', 'KILL'], s.env)).status).to.equal(1);
    expect((await runCli(['delete', '--force', '--root', root, 'reused'], s.env)).status).to.equal(0);
    await new Promise((r) => setTimeout(r, 100));
    expect(other.child.exitCode, 'an unrelated process was killed').to.equal(null);
    expect(other.child.signalCode).to.equal(null);
    expect(entries(root)).to.deep.equal([]);
  });

  it('delete --force ends the monitor and the VMM and removes the run files; delete ends a VMM left by a killed monitor', async () => {
    const monitor = await sleeper();
    const vmm = await sleeper();
    const dir = record('c1', { status: 'running', pid: monitor.pid, pidStartTime: monitor.startTime, vmm: { pid: vmm.pid, startTime: vmm.startTime } });
    mkdirSync(join(dir, 'ts-vmm-run-x'));
    writeFileSync(join(dir, 'ts-vmm-run-x', 'initrd'), 'initrd');
    const r = await runCli(['delete', '--force', '--root', root, 'c1'], s.env);
    expect([r.status, r.stderr]).to.deep.equal([0, '']);
    expect(monitor.child.signalCode ?? (await once(monitor.child, 'exit'))[1]).to.equal('SIGKILL');
    expect(vmm.child.signalCode ?? (await once(vmm.child, 'exit'))[1]).to.equal('SIGKILL');
    expect(entries(root)).to.deep.equal([]);

    // `kill c2 KILL` ended the monitor only; the VMM it started is still there when the container is deleted.
    const orphan = await sleeper();
    record('c2', { status: 'running', pid: 0x7ffffff0, pidStartTime: '1', vmm: { pid: orphan.pid, startTime: orphan.startTime } });
    expect((await runCli(['delete', '--root', root, 'c2'], s.env)).status).to.equal(0);
    expect(orphan.child.signalCode ?? (await once(orphan.child, 'exit'))[1]).to.equal('SIGKILL');
    expect(entries(root)).to.deep.equal([]);
  });

  it('delete removes the disk lock a killed monitor held', async () => {
    const lock = join(s.dir, 'rootfs.ext4.lock');
    writeFileSync(lock, '2147483632');
    record('c3', { status: 'stopped', pid: 0x7ffffff0, pidStartTime: '1', diskLock: lock });
    expect((await runCli(['delete', '--root', root, 'c3'], s.env)).status).to.equal(0);
    expect(entries(s.dir, 'rootfs')).to.deep.equal([]);
  });
});

describe('ts-vmm create --pid-file', () => {
  let s: Scratch;
  beforeEach(() => {
    s = scratch('ts-vmm-cli-oci-');
  });
  afterEach(() => rmSync(s.dir, { recursive: true, force: true }));

  it('refuses a pid file in a directory that does not exist, before booting anything', async () => {
    const bundle = join(s.dir, 'b');
    mkdirSync(join(bundle, 'rootfs'), { recursive: true });
    writeFileSync(join(bundle, 'rootfs', 'app'), '', { mode: 0o755 });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', root: { path: 'rootfs' }, process: { args: ['/app'], cwd: '/' } }));
    const root = join(s.dir, 'root');
    const pidFile = join(s.dir, 'nonexistent', 'dir', 'p');
    const r = await runCli(['create', '--root', root, '--bundle', bundle, '--pid-file', pidFile, 'c1'], { ...s.env, TS_VMM_LAB: 'force' });
    expect(r.stderr).to.equal(`ts-vmm: --pid-file ${pidFile}: ${dirname(pidFile)} is not a directory\n`);
    expect(r.status).to.equal(1);
    expect(entries(root)).to.deep.equal([]);
    expect(entries(join(s.dir, 'tmp'))).to.deep.equal([]);
  });
});

describe('ts-vmm create --console-socket', () => {
  let s: Scratch;
  beforeEach(() => {
    s = scratch('ts-vmm-cli-oci-');
  });
  afterEach(() => rmSync(s.dir, { recursive: true, force: true }));

  function bundleWithTerminal(terminal: boolean): string {
    const bundle = join(s.dir, 'b');
    mkdirSync(join(bundle, 'rootfs'), { recursive: true });
    writeFileSync(join(bundle, 'rootfs', 'app'), '', { mode: 0o755 });
    writeFileSync(
      join(bundle, 'config.json'),
      JSON.stringify({ ociVersion: '1.0.2', root: { path: 'rootfs' }, process: { terminal, args: ['/app'], cwd: '/' } }),
    );
    return bundle;
  }

  it('pairs process.terminal with --console-socket, as runc does, before booting anything', async () => {
    const root = join(s.dir, 'root');
    const env = { ...s.env, TS_VMM_LAB: 'force' };
    const noSocket = await runCli(['create', '--root', root, '--bundle', bundleWithTerminal(true), 'c1'], env);
    expect(noSocket.stderr).to.equal(`ts-vmm: ${join(s.dir, 'b', 'config.json')}: process.terminal needs --console-socket\n`);
    expect(noSocket.status).to.equal(1);
    const noTerminal = await runCli(['create', '--root', root, '--bundle', bundleWithTerminal(false), '--console-socket', join(s.dir, 'sock'), 'c1'], env);
    expect(noTerminal.stderr).to.equal(`ts-vmm: --console-socket needs process.terminal in ${join(s.dir, 'b', 'config.json')}\n`);
    expect(noTerminal.status).to.equal(1);
    expect(entries(root)).to.deep.equal([]);
  });

  it("with --log, writes the bundle's warnings there, not on create's stderr (the container's, to an engine)", async () => {
    const bundle = bundleWithTerminal(false);
    const config = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(bundle, 'config.json'), JSON.stringify({ ...config, linux: { sysctl: { 'net.ipv4.ip_forward': '1' } } }));
    const log = join(s.dir, 'log.json');
    const r = await runCli(['--log', log, '--log-format', 'json', 'create', '--root', join(s.dir, 'root'), '--bundle', bundle, 'c1'], {
      ...s.env,
      TS_VMM_LAB: 'force',
    });
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/^ts-vmm: ts-vmm create needs KVM[^\n]*\n$/);
    const lines = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { level: string; msg: string });
    expect(lines[0]).to.deep.include({ level: 'warning', msg: `${join(bundle, 'config.json')}: linux.sysctl ignored: not applied inside the guest` });
    expect(lines.at(-1)?.level).to.equal('error');
  });

  it("accepts runc's --no-pivot and --no-new-keyring (the bundle is checked next)", async () => {
    const r = await runCli(['create', '--no-pivot', '--no-new-keyring', '--root', join(s.dir, 'root'), '--bundle', join(s.dir, 'none'), 'c1'], {
      ...s.env,
      TS_VMM_LAB: 'force',
    });
    expect(r.stderr).to.match(/none\/config.json: no such file/);
    expect(r.status).to.equal(1);
  });
});

describe('ts-vmm as runc: the global options container engines pass', () => {
  let s: Scratch;
  beforeEach(() => {
    s = scratch('ts-vmm-cli-runc-');
  });
  afterEach(() => rmSync(s.dir, { recursive: true, force: true }));

  it("takes --root, --log and --log-format json before the verb, as containerd's shim passes them, and logs the error there", async () => {
    const root = join(s.dir, 'root');
    const log = join(s.dir, 'log.json');
    const r = await runCli(['--root', root, '--log', log, '--log-format', 'json', 'state', 'c1'], s.env);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.equal(`ts-vmm: container "c1" does not exist (in ${root})\n`);
    const lines = readFileSync(log, 'utf8')
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { level: string; msg: string; time: string });
    expect(lines.map((l) => [l.level, l.msg])).to.deep.equal([['error', `container "c1" does not exist (in ${root})`]]);
    expect(Number.isNaN(Date.parse(lines[0]!.time))).to.equal(false);
  });

  it('writes logrus text lines by default, notes --systemd-cgroup, and logs progress only with --debug', async () => {
    const root = join(s.dir, 'root');
    const log = join(s.dir, 'log');
    await runCli(['--systemd-cgroup', '--root', root, '--log', log, 'kill', 'c1', 'KILL'], s.env);
    const text = readFileSync(log, 'utf8');
    expect(text).to.match(/^time="[^"]+" level=warning msg="--systemd-cgroup ignored: the container runs in a VM, which joins no host cgroup"\n/);
    expect(text).to.match(/level=error msg="container \\"c1\\" does not exist/);
    expect(text).not.to.contain('level=debug');
    await runCli(['--debug', '--root', root, '--log', log, 'state', 'c1'], s.env);
    expect(readFileSync(log, 'utf8')).to.contain('level=debug msg="state c1"');
  });

  it('prints runtime-spec features: versions, mount options, and no host isolation features', async () => {
    const r = await runCli(['features'], s.env);
    expect(r.status, r.stderr).to.equal(0);
    const features = JSON.parse(r.stdout) as { ociVersionMin: string; ociVersionMax: string; mountOptions: string[]; linux: { namespaces: string[] } };
    expect(features).to.include({ ociVersionMin: '1.0.0', ociVersionMax: RUNTIME_SPEC_VERSION });
    expect(features.mountOptions).to.include.members(['ro', 'nosuid', 'nodev', 'noexec', 'relatime', 'defaults']);
    expect(features.linux.namespaces).to.deep.equal([]);
  });

  it("delete --force of an unknown id succeeds, as runc's does; delete without --force does not", async () => {
    const root = join(s.dir, 'root');
    expect((await runCli(['--root', root, 'delete', '--force', 'c1'], s.env)).status).to.equal(0);
    const r = await runCli(['--root', root, 'delete', 'c1'], s.env);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.equal(`ts-vmm: container "c1" does not exist (in ${root})\n`);
  });
});

describe('ts-vmm exec, against the guest agent run on the host (Unix sockets in place of vsock)', function () {
  this.timeout(60_000);
  let s: Scratch;
  let root: string;
  let agent: string;
  let main: WorkloadIo;
  let agentProcess: ChildProcess;
  let mainInput: PassThrough;

  before(async () => {
    s = scratch('ts-vmm-cli-exec-');
    root = join(s.dir, 'root');
    agent = await ensureGuestAgent(join(s.dir, 'agent'));
  });
  after(() => rmSync(s.dir, { recursive: true, force: true }));

  /** A running container "c1": the agent, its process waiting for its stdin, and the state exec reads. */
  beforeEach(async () => {
    const bundle = join(s.dir, 'bundle');
    mkdirSync(join(bundle, 'rootfs'), { recursive: true });
    writeFileSync(
      join(bundle, 'config.json'),
      JSON.stringify({ ociVersion: '1.0.2', process: { cwd: '/', env: ['PATH=/usr/bin:/bin', 'FROM=bundle'], args: ['sh'] }, root: { path: 'rootfs' } }),
    );
    const socket = join(s.dir, 'main.sock');
    const execSocket = join(s.dir, 'exec.sock');
    rmSync(execSocket, { force: true });
    mainInput = new PassThrough();
    main = await WorkloadIo.listen(socket, { stdin: mainInput, stdout: new PassThrough(), stderr: new PassThrough() }, () => undefined);
    agentProcess = spawn(agent, ['--unix', socket, '--exec-listen', execSocket], { stdio: 'ignore' });
    await main.whenReady();
    main.start(['--', '/bin/sh', '-c', 'cat > /dev/null']);
    mkdirSync(join(root, 'c1'), { recursive: true });
    const pid = agentProcess.pid!;
    const record: ContainerRecord = {
      ociVersion: RUNTIME_SPEC_VERSION,
      id: 'c1',
      status: 'running',
      pid,
      pidStartTime: processStartTime(pid)!,
      bundle,
      annotations: {},
      created: 'now',
      exec: { socket: execSocket },
    };
    writeFileSync(join(root, 'c1', 'state.json'), JSON.stringify(record));
  });
  afterEach(async () => {
    mainInput.end();
    await main.whenExited().catch(() => undefined);
    main.close();
    agentProcess.kill('SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });

  it("runs a command as runc does: the bundle's environment and -e, options after the id belong to the command, its status is exec's", async () => {
    const r = await runCli(['--root', root, 'exec', '-e', 'EXTRA=x', 'c1', 'sh', '-c', 'echo "$FROM $EXTRA"; echo err >&2; exit 5'], s.env);
    expect([r.status, r.stdout, r.stderr]).to.deep.equal([5, 'bundle x\n', 'err\n']);
  });

  it('takes a runtime-spec process file (--process), as containerd and podman pass it', async () => {
    const file = join(s.dir, 'process.json');
    writeFileSync(file, JSON.stringify({ cwd: '/tmp', env: ['ONLY=file'], args: ['/bin/sh', '-c', 'echo "$ONLY $FROM $(pwd)"'], user: { uid: 0, gid: 0 } }));
    const r = await runCli(['--root', root, 'exec', '--process', file, 'c1'], s.env);
    expect([r.status, r.stdout]).to.deep.equal([0, 'file  /tmp\n']);
  });

  it('--detach returns once the program runs and writes the pid of the relay, which carries its output', async () => {
    const out = join(s.dir, 'detached.out');
    const pidFile = join(s.dir, 'exec.pid');
    const child = spawn(process.execPath, [cliEntry(), '--root', root, 'exec', '--detach', '--pid-file', pidFile, 'c1', 'sh', '-c', 'sleep 0.5; echo later'], {
      env: s.env,
      stdio: ['ignore', openSync(out, 'w'), 'inherit'],
    });
    const [status] = (await once(child, 'exit')) as [number];
    expect(status).to.equal(0);
    const relay = Number(readFileSync(pidFile, 'utf8'));
    expect(readFileSync(`/proc/${relay}/cmdline`, 'utf8')).to.contain('oci-exec-relay');
    while (existsSync(`/proc/${relay}`) && !readFileSync(`/proc/${relay}/stat`, 'utf8').includes(') Z ')) await new Promise((r) => setTimeout(r, 50));
    expect(readFileSync(out, 'utf8')).to.equal('later\n');
  });

  it('refuses, in one line each: a program that cannot start (detached), a terminal without a console socket, a stopped container, a confidential one', async () => {
    const missing = await runCli(['--root', root, 'exec', '--detach', 'c1', '/no/such/program'], s.env);
    expect([missing.status, missing.stderr]).to.deep.equal([1, 'ts-vmm: exec /no/such/program: No such file or directory\n']);
    const tty = await runCli(['--root', root, 'exec', '--detach', '--tty', 'c1', 'sh'], s.env);
    expect([tty.status, tty.stderr]).to.deep.equal([1, 'ts-vmm: exec --detach with a terminal needs --console-socket\n']);
    const state = JSON.parse(readFileSync(join(root, 'c1', 'state.json'), 'utf8')) as ContainerRecord;
    writeFileSync(join(root, 'c1', 'state.json'), JSON.stringify({ ...state, exec: undefined }));
    const confidential = await runCli(['--root', root, 'exec', 'c1', 'sh'], s.env);
    expect([confidential.status, confidential.stderr]).to.deep.equal([
      1,
      'ts-vmm: container "c1" takes no further process: its image names the only one (a confidential workload)\n',
    ]);
    writeFileSync(join(root, 'c1', 'state.json'), JSON.stringify({ ...state, status: 'stopped' }));
    const stopped = await runCli(['--root', root, 'exec', 'c1', 'sh'], s.env);
    expect([stopped.status, stopped.stderr]).to.deep.equal([1, 'ts-vmm: container "c1" is stopped: no process can be started in it\n']);
  });
});
