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
import { CriClient, type PodSandboxConfig } from './cri-client.js';
import { type Containerd, importImage, podmanCommand, podmanImport, startContainerd, writeRuntimeWrapper } from './engines.js';

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

/** What a runtime state root holds of containers: their state directories and their socket directories. */
function containersIn(root: string): string[] {
  const sockets = join(root, '.sockets');
  return [
    ...(existsSync(root) ? readdirSync(root).filter((entry) => entry !== '.sockets') : []),
    ...(existsSync(sockets) ? readdirSync(sockets).map((entry) => `.sockets/${entry}`) : []),
  ];
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
    runtime = join(tmp, 'ts-vmm');
    writeRuntimeWrapper(runtime);
  });

  after(() => {
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  });

  function expectNothingLeft(stateRoot: string, id: string, bundle?: string): void {
    expect(tsVmmProcesses().join('\n'), 'ts-vmm processes left').to.equal('');
    expect(existsSync(join(stateRoot, id)), `state directory ${join(stateRoot, id)}`).to.equal(false);
    expect(containersIn(stateRoot), `${stateRoot}: the runtime's state`).to.deep.equal([]);
    if (bundle !== undefined) expect(existsSync(bundle), `bundle ${bundle}`).to.equal(false);
  }

  describe('containerd (ctr, the runc shim)', () => {
    let containerd: Containerd;
    let ctr: string[];
    const image = 'docker.io/library/ts-vmm-busybox:test';
    const shimRoot = '/run/containerd/runc/ts-vmm-test'; // the shim's --root for namespace ts-vmm-test
    const bundleOf = (id: string): string => join(containerd.state, 'io.containerd.runtime.v2.task', 'ts-vmm-test', id);

    before(async () => {
      containerd = await startContainerd(tmp, 'containerd', 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n');
      ctr = containerd.ctr('ts-vmm-test');
      await importImage(containerd, 'ts-vmm-test', join(tmp, 'rootfs'), image, tmp);
    });

    after(() => containerd?.stop());

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
      expect(tsVmmProcesses().join('\n'), 'ts-vmm processes left').to.equal('');
      expect(containersIn(stateRoot)).to.deep.equal([]);
    };

    before(async () => {
      podman = podmanCommand(tmp, runtime);
      await podmanImport(podman, join(tmp, 'rootfs'), image, tmp);
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

  describe("containerd's CRI plugin, driven as kubelet drives it (RuntimeClass handler, pod annotations)", () => {
    let containerd: Containerd;
    let cri: CriClient;
    const shimRoot = '/run/ts-vmm-cri'; // the handler's Root, which the shim passes as --root
    const image = 'docker.io/library/ts-vmm-busybox:cri';
    const pauseImage = 'docker.io/library/ts-vmm-pause:cri';
    /** Every runtime call the shim makes, with its start and end (seconds of uptime) and exit status. */
    const verbLog = (): string => join(tmp, 'cri-runtime-calls.log');
    /** A failed test says what containerd logged at error level (the shim's and the runtime's reasons). */
    const withContainerdErrors = async (body: () => Promise<void>): Promise<void> => {
      try {
        await body();
      } catch (error) {
        const errors = readFileSync(join(tmp, 'containerd-cri.log'), 'utf8')
          .split('\n')
          .filter((line) => line.includes('level=error'));
        const verbs = existsSync(verbLog()) ? readFileSync(verbLog(), 'utf8') : '';
        const tasks = join(containerd.state, 'io.containerd.runtime.v2.task', 'k8s.io');
        const runtimeLogs = (existsSync(tasks) ? readdirSync(tasks) : [])
          .map((id) => join(tasks, id, 'log.json'))
          .filter((path) => existsSync(path))
          .map((path) => readFileSync(path, 'utf8'))
          .join('');
        if (error instanceof Error)
          error.message += `\ncontainerd's errors:\n${errors.slice(-10).join('\n')}\nruntime calls:\n${verbs}\nruntime logs:\n${runtimeLogs}`;
        throw error;
      }
    };

    let madeResolvConf = false;

    before(async () => {
      writeRuntimeWrapper(join(tmp, 'ts-vmm-cri'), { verbLog: verbLog() });
      // A host-network pod gets the node's resolv.conf, which the CRI plugin copies; the lab has none.
      if (!existsSync('/etc/resolv.conf')) {
        writeFileSync('/etc/resolv.conf', 'nameserver 10.96.0.10\n');
        madeResolvConf = true;
      }
      const plugin = 'plugins."io.containerd.grpc.v1.cri"';
      containerd = await startContainerd(
        tmp,
        'containerd-cri',
        `version = 2
[${plugin}]
  sandbox_image = "${pauseImage}"
[${plugin}.containerd]
  snapshotter = "native"
  default_runtime_name = "runc"
[${plugin}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[${plugin}.cni]
  bin_dir = "${join(tmp, 'cni-bin')}"
  conf_dir = "${join(tmp, 'cni-conf')}"
[${plugin}.containerd.runtimes.ts-vmm]
  runtime_type = "io.containerd.runc.v2"
  pod_annotations = ["ts-vmm.cpus", "ts-vmm.memory-mib"]
[${plugin}.containerd.runtimes.ts-vmm.options]
  BinaryName = "${join(tmp, 'ts-vmm-cri')}"
  Root = "${shimRoot}"
`,
      );
      cri = new CriClient(containerd.socket);
      // The CRI plugin loads with containerd or not at all (a bad config only shows in containerd's log).
      expect(await cri.version(), 'the CRI plugin answers').to.deep.include({ runtime_name: 'containerd', runtime_api_version: 'v1' });
      // kubelet's images live in containerd's k8s.io namespace; none can be pulled here, so they are imported.
      await importImage(containerd, 'k8s.io', join(tmp, 'rootfs'), image, tmp);
      await importImage(containerd, 'k8s.io', join(tmp, 'rootfs'), pauseImage, tmp, ['sleep', '2147483647']);
    });

    after(async () => {
      cri?.close();
      await containerd?.stop();
      if (madeResolvConf) rmSync('/etc/resolv.conf');
    });

    /** The container's lines in its CRI log (`<time> <stream> <F|P> <text>`), as `stream: text`. */
    const criLog = (path: string): string[] =>
      existsSync(path)
        ? readFileSync(path, 'utf8')
            .split('\n')
            .filter((line) => line !== '')
            .map((line) => {
              const [, stream, , ...text] = line.split(' ');
              return `${stream}: ${text.join(' ')}`;
            })
        : [];

    it('RunPodSandbox, CreateContainer, StartContainer, ContainerStatus, ExecSync, StopContainer, RemovePodSandbox', () =>
      withContainerdErrors(async () => {
        const logDirectory = join(tmp, 'pods', 'hello');
        const pod: PodSandboxConfig = {
          metadata: { name: 'hello', uid: 'f3c4a1d2-hello', namespace: 'default', attempt: 0 },
          hostname: 'hello-pod',
          log_directory: logDirectory,
          annotations: { 'ts-vmm.cpus': '2', 'ts-vmm.memory-mib': '320' },
          linux: { security_context: { namespace_options: { network: 'NODE' } } },
        };
        const sandbox = await cri.runPodSandbox(pod, 'ts-vmm');
        expect(await cri.podSandboxState(sandbox)).to.deep.include({ state: 'SANDBOX_READY', runtime_handler: 'ts-vmm' });
        const container = await cri.createContainer(
          sandbox,
          {
            metadata: { name: 'app', attempt: 0 },
            image: { image },
            command: ['sh', '-c'],
            args: [`echo "cpus $(nproc) host $(cat /etc/hostname) greeting $GREETING"; grep nameserver /etc/resolv.conf; ${TRAPPING}`],
            envs: [{ key: 'GREETING', value: 'hi there' }],
            log_path: 'app.log',
          },
          pod,
        );
        expect((await cri.containerStatus(container)).state).to.equal('CONTAINER_CREATED');
        await cri.startContainer(container);
        const log = join(logDirectory, 'app.log');
        const deadline = Date.now() + 240_000;
        while (!criLog(log).includes('stdout: up')) {
          if (Date.now() > deadline) throw new Error(`the container never said "up": ${criLog(log).join('\n')}`);
          await new Promise((r) => setTimeout(r, 500));
        }
        // The pod's annotations sized the VM (two vCPUs); the pod's hostname and resolv.conf were copied in.
        const nameserver = readFileSync('/etc/resolv.conf', 'utf8')
          .split('\n')
          .filter((line) => line.startsWith('nameserver'));
        expect(criLog(log)).to.deep.equal(['stdout: cpus 2 host hello-pod greeting hi there', ...nameserver.map((line) => `stdout: ${line}`), 'stdout: up']);
        expect((await cri.containerStatus(container)).state).to.equal('CONTAINER_RUNNING');

        const exec = await cri.execSync(container, ['sh', '-c', 'echo exec says hi; echo to stderr >&2; exit 4'], 120);
        expect([exec.exit_code, exec.stdout.toString(), exec.stderr.toString()]).to.deep.equal([4, 'exec says hi\n', 'to stderr\n']);
        const missing = await cri.execSync(container, ['/no/such/program'], 120).then(
          (r) => `exit ${r.exit_code}: ${r.stderr.toString()}`,
          (error: Error) => error.message,
        );
        expect(missing).to.include('/no/such/program');

        await cri.stopContainer(container, 60);
        const stopped = await cri.containerStatus(container);
        expect([stopped.state, stopped.exit_code]).to.deep.equal(['CONTAINER_EXITED', 3]);
        expect(criLog(log).at(-1)).to.equal('stdout: got TERM');
        await cri.removeContainer(container);
        await cri.stopPodSandbox(sandbox);
        await cri.removePodSandbox(sandbox);
        // containerd finishes a pod's removal in the background: when its wait for the shim to shut down runs out
        // (as it does in the lab, where every runtime call starts Node under TCG), its cleanup runs the runtime's
        // `delete --force` after RemovePodSandbox has returned. Nothing may be left once that is done.
        const cleanupDeadline = Date.now() + 120_000;
        while (tsVmmProcesses().length > 0 && Date.now() < cleanupDeadline) await new Promise((r) => setTimeout(r, 500));
        expect(tsVmmProcesses().join('\n'), 'ts-vmm processes left').to.equal('');
        expect(containersIn(join(shimRoot, 'k8s.io')), `${shimRoot}: the runtime's state`).to.deep.equal([]);
        for (const dir of [
          join(containerd.state, 'io.containerd.runtime.v2.task', 'k8s.io'),
          join(containerd.root, 'io.containerd.grpc.v1.cri', 'sandboxes'),
          join(containerd.state, 'io.containerd.grpc.v1.cri', 'sandboxes'),
        ])
          expect(existsSync(dir) ? readdirSync(dir) : [], dir).to.deep.equal([]);
      }));
  });
});
