// Real container engines drive ts-vmm as their OCI runtime: containerd (ctr, through its runc shim, as Kubernetes
// does) and podman (through conmon). Images are made offline from a busybox rootfs. After each test nothing of
// the container is left: no monitor or VM process, no state directory, no bundle the engine made for it.
import { expect } from 'chai';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBusybox } from '../../src/assets/debian.js';
import { writeBusyboxRootfs } from '../../src/oci/example-rootfs.js';
import { cliEntry } from '../../src/sys/project-paths.js';
import { tarDirectory, writeOciImageTar } from './engine-image.js';

interface Outcome {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(argv: readonly string[], timeoutMs = 240_000): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    execFile(argv[0] ?? '', argv.slice(1), { timeout: timeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = (error as { code?: unknown } | null)?.code;
      if (error && typeof code !== 'number') reject(new Error(`${argv.join(' ')}: ${error.message}\n${stderr}`));
      else resolve({ status: typeof code === 'number' ? code : 0, stdout, stderr });
    });
  });
}

/** Runs and expects exit status 0, returning stdout. */
async function ok(argv: readonly string[]): Promise<string> {
  const r = await run(argv);
  expect(r.status, `${argv.join(' ')}\n${r.stderr}`).to.equal(0);
  return r.stdout;
}

/** Output of a running child, with a wait for a piece of text in its stdout. */
class Attached {
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (d: Buffer) => (this.stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = once(child, 'exit').then(([code]) => code as number | null);
  }
  async waitFor(text: string, timeoutMs = 240_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.stdout.includes(text)) {
      if (this.child.exitCode !== null || Date.now() > deadline) throw new Error(`no "${text}" in the output:\n${this.stdout}\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Processes (other than this one) running ts-vmm: monitors and VMMs. */
function tsVmmProcesses(): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid)) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmdline.includes(cliEntry())) found.push(`${pid}: ${cmdline}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

const TRAPPING = 'trap "echo got TERM; exit 3" TERM; echo up; while :; do sleep 1; done';

describe('real container engines drive ts-vmm: containerd and podman @kvm', function () {
  this.timeout(600_000);
  let tmp: string;
  let runtime: string;

  before(async function () {
    if (process.getuid?.() !== 0) this.skip(); // both engines run containers as root here
    tmp = mkdtempSync(join(tmpdir(), 'ts-vmm-engines-'));
    await writeBusyboxRootfs((await ensureBusybox()).path, join(tmp, 'rootfs'));
    // The engines run the runtime with an environment of their own: the wrapper names what ts-vmm needs.
    runtime = join(tmp, 'ts-vmm');
    const env = ['TS_VMM_AGENT', 'TS_VMM_CACHE', 'TS_VMM_RUN_CACHE', 'HOME']
      .filter((name) => process.env[name] !== undefined)
      .map((name) => `${name}='${process.env[name]}'`);
    writeFileSync(runtime, `#!/bin/sh\nexec env ${env.join(' ')} '${process.execPath}' '${cliEntry()}' "$@"\n`, { mode: 0o755 });
  });

  after(() => {
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  });

  function expectNothingLeft(stateRoot: string, id: string, bundle?: string): void {
    expect(tsVmmProcesses()).to.deep.equal([]);
    expect(existsSync(join(stateRoot, id)), `state directory ${join(stateRoot, id)}`).to.equal(false);
    if (bundle !== undefined) expect(existsSync(bundle), `bundle ${bundle}`).to.equal(false);
  }

  describe('containerd (ctr, the runc shim)', () => {
    let containerd: ChildProcess;
    let ctr: string[];
    const image = 'docker.io/library/ts-vmm-busybox:test';
    const shimRoot = '/run/containerd/runc/ts-vmm-test'; // the shim's --root for namespace ts-vmm-test
    const bundleOf = (id: string): string => join(tmp, 'containerd-state', 'io.containerd.runtime.v2.task', 'ts-vmm-test', id);

    before(async () => {
      // The runc shim watches the container's cgroup (v2); the lab mounts none.
      if (!existsSync('/sys/fs/cgroup/cgroup.controllers')) await ok(['mount', '-t', 'cgroup2', 'none', '/sys/fs/cgroup']);
      const config = join(tmp, 'containerd.toml');
      writeFileSync(config, 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n');
      const address = join(tmp, 'containerd.sock');
      containerd = spawn(
        'containerd',
        ['--config', config, '--root', join(tmp, 'containerd-root'), '--state', join(tmp, 'containerd-state'), '--address', address],
        {
          stdio: 'ignore',
        },
      );
      // The native snapshotter copies layers: the lab's tmpfs root has no overlay module.
      ctr = ['ctr', '--address', address, '--namespace', 'ts-vmm-test'];
      const deadline = Date.now() + 60_000;
      while ((await run([...ctr, 'version'])).status !== 0) {
        if (Date.now() > deadline) throw new Error('containerd did not answer within 60 s');
        await new Promise((r) => setTimeout(r, 500));
      }
      await writeOciImageTar(join(tmp, 'rootfs'), image, tmp, join(tmp, 'image.tar'));
      await ok([...ctr, 'images', 'import', '--snapshotter', 'native', join(tmp, 'image.tar')]);
    });

    after(async () => {
      containerd?.kill('SIGTERM');
      if (containerd) await once(containerd, 'exit');
    });

    const ctrRun = (id: string, ...command: string[]): string[] => [
      ...ctr,
      'run',
      '--rm',
      '--snapshotter',
      'native',
      '--runc-binary',
      runtime,
      image,
      id,
      ...command,
    ];

    it('ctr run --rm: the workload output and its exit status', async () => {
      const r = await run(ctrRun('hello', 'sh', '-c', 'echo hello from ctr; exit 7'));
      expect(r.stdout, r.stderr).to.equal('hello from ctr\n');
      expect(r.stderr, "the runtime's warnings belong in its --log, not in the container's stderr").to.not.include('ts-vmm');
      expect(r.status).to.equal(7);
      expectNothingLeft(shimRoot, 'hello', bundleOf('hello'));
    });

    it('ctr task ps lists the monitor and the VMM; ctr task exec runs a second process; ctr task kill delivers SIGTERM', async () => {
      const [program, ...args] = ctrRun('trapping', 'sh', '-c', TRAPPING);
      const attached = new Attached(spawn(program ?? '', args));
      await attached.waitFor('up\n');
      const ps = (await ok([...ctr, 'task', 'ps', 'trapping'])).trim().split('\n');
      expect(ps[0]).to.match(/^PID\s+INFO$/);
      const pids = ps.slice(1).map((line) => Number(line.split(/\s+/)[0]));
      expect(pids).to.have.length(2);
      for (const pid of pids) expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).to.include(cliEntry());
      const exec = await run([...ctr, 'task', 'exec', '--exec-id', 'second', 'trapping', 'sh', '-c', 'echo exec says hi; ls /no-such >&2; exit 4']);
      expect([exec.status, exec.stdout, exec.stderr]).to.deep.equal([4, 'exec says hi\n', 'ls: /no-such: No such file or directory\n']);
      await ok([...ctr, 'task', 'kill', 'trapping']);
      expect(await attached.exited).to.equal(3);
      expect(attached.stdout).to.equal('up\ngot TERM\n');
      expectNothingLeft(shimRoot, 'trapping', bundleOf('trapping'));
    });

    it("tells ctr's user why the runtime failed (its --log file, in runc's JSON shape)", async () => {
      const r = await run(ctrRun('missing', '/bin/nothere'));
      expect(r.status).to.not.equal(0);
      expect(r.stderr).to.match(/OCI runtime create failed: [^\n]*entrypoint "\/bin\/nothere" not found/);
      expectNothingLeft(shimRoot, 'missing', bundleOf('missing'));
    });
  });

  describe('podman (conmon)', () => {
    let podman: string[];
    const stateRoot = '/run/ts-vmm'; // podman passes no --root
    const image = 'localhost/ts-vmm-busybox:test';

    /** Not one container of podman's left in the runtime's state. */
    const expectNoPodmanContainers = (): void => {
      expect(tsVmmProcesses()).to.deep.equal([]);
      expect(existsSync(stateRoot) ? readdirSync(stateRoot) : []).to.deep.equal([]);
    };

    before(async () => {
      podman = [
        'podman',
        '--root',
        join(tmp, 'podman-storage'),
        '--runroot',
        join(tmp, 'podman-run'),
        '--tmpdir',
        join(tmp, 'podman-tmp'),
        '--storage-driver',
        'vfs',
        '--cgroup-manager',
        'cgroupfs',
        '--events-backend',
        'file',
        '--runtime',
        runtime,
      ];
      await tarDirectory(join(tmp, 'rootfs'), join(tmp, 'rootfs.tar'));
      await ok([...podman, 'import', join(tmp, 'rootfs.tar'), image]);
    });

    it('podman run --rm: the workload output and its exit status', async () => {
      const r = await run([
        ...podman,
        'run',
        '--rm',
        '--network',
        'none',
        '--hostname',
        'hello-host',
        image,
        'sh',
        '-c',
        'echo hello from podman; echo "$(cat /etc/hostname)"; exit 9',
      ]);
      // The hostname is podman's /etc/hostname, a host file bound in (copied into the guest as it is: podman
      // 4.3 writes it without a final newline, later versions with one; the echo gives one either way).
      expect(r.stdout, r.stderr).to.equal('hello from podman\nhello-host\n');
      expect(r.status).to.equal(9);
      expectNoPodmanContainers();
    });

    it('podman run -t: the workload runs on a terminal (the pty master passed to conmon over --console-socket)', async () => {
      const r = await run([...podman, 'run', '--rm', '-t', '--network', 'none', image, 'sh', '-c', 'test -t 0 && test -t 1 && echo on a terminal; exit 5']);
      expect(r.stdout, `${r.stdout}\n${r.stderr}`).to.equal('on a terminal\r\n');
      expect(r.status).to.equal(5);
      expectNoPodmanContainers();
    });

    it('podman exec runs further processes (with -t on a terminal); podman stop delivers SIGTERM within its timeout', async () => {
      const id = (await ok([...podman, 'run', '-d', '--network', 'none', '--name', 'trapping', image, 'sh', '-c', TRAPPING])).trim();
      const deadline = Date.now() + 240_000;
      while (!(await ok([...podman, 'logs', 'trapping'])).includes('up\n')) {
        if (Date.now() > deadline) throw new Error('the container never said "up"');
        await new Promise((r) => setTimeout(r, 500));
      }
      const exec = await run([...podman, 'exec', 'trapping', 'sh', '-c', 'echo exec says hi; exit 4']);
      expect([exec.status, exec.stdout], exec.stderr).to.deep.equal([4, 'exec says hi\n']);
      const onTerminal = await run([...podman, 'exec', '-t', 'trapping', 'sh', '-c', 'test -t 0 && test -t 1 && echo on a terminal']);
      expect([onTerminal.status, onTerminal.stdout], onTerminal.stderr).to.deep.equal([0, 'on a terminal\r\n']);
      const missing = await run([...podman, 'exec', 'trapping', '/no/such/program']);
      expect(missing.status, missing.stderr).to.not.equal(0);
      expect(missing.stderr).to.include('/no/such/program');
      const started = Date.now();
      await ok([...podman, 'stop', '-t', '60', 'trapping']);
      expect(Date.now() - started).to.be.below(60_000);
      expect(await ok([...podman, 'logs', 'trapping'])).to.equal('up\ngot TERM\n');
      expect((await ok([...podman, 'inspect', '--format', '{{.State.ExitCode}}', 'trapping'])).trim()).to.equal('3');
      await ok([...podman, 'rm', 'trapping']);
      expectNothingLeft(stateRoot, id);
      expectNoPodmanContainers();
    });
  });
});
