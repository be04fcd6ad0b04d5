// End to end on real KVM: the ts-vmm CLI runs bundles (busybox rootfs built here) in micro-VMs.
// Runs directly where /dev/kvm works, otherwise inside the lab (`mocha --grep @kvm` there).
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureBusybox } from '../../src/assets/debian.js';
import { writeBusyboxRootfs } from '../../src/oci/example-rootfs.js';
import { processStartTime } from '../../src/oci/runtime-state.js';
import { hashTree } from '../../src/oci/tree-hash.js';

const project = fileURLToPath(new URL('../../../', import.meta.url));
const cli = join(project, 'bin', 'ts-vmm.js');

interface Result {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Collected {
  done: Promise<Result>;
  stdout(): string;
  stderr(): string;
}

function collect(child: ChildProcess): Collected {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => {
    stdout += c.toString();
  });
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const done = new Promise<Result>((resolve) => child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr })));
  return { done, stdout: () => stdout, stderr: () => stderr };
}

/** Waits until the child's stdout contains `text` (output already seen counts), failing at once if
 * the child ends first and after `timeoutMs` otherwise. */
async function waitForText(child: Collected, text: string, timeoutMs = 240_000): Promise<void> {
  let ended: Result | undefined;
  void child.done.then((r) => {
    ended = r;
  });
  for (const start = Date.now(); !child.stdout().includes(text); ) {
    if (ended !== undefined)
      throw new Error(`the command ended (status ${ended.status}, signal ${ended.signal}) before printing "${text}"; stderr:\n${ended.stderr}`);
    if (Date.now() - start > timeoutMs) throw new Error(`no "${text}" within ${timeoutMs} ms; output so far:\n${child.stdout()}\n${child.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Lines ts-vmm itself printed (progress), which are not the workload's. */
const workloadStderr = (text: string): string =>
  text
    .split('\n')
    .filter((l) => !l.startsWith('ts-vmm: '))
    .join('\n');

describe('ts-vmm run and the OCI commands @kvm', function () {
  this.timeout(300_000);
  let dir: string;
  let busybox: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-run-kvm-'));
    busybox = (await ensureBusybox()).path;
    // Root disks and per-bundle state go under the test's directory, not the user's.
    env = { ...process.env, TS_VMM_STATE: join(dir, 'state') };
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function bundle(name: string, processSpec: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<string> {
    const path = join(dir, name);
    mkdirSync(path, { recursive: true });
    await writeBusyboxRootfs(busybox, join(path, 'rootfs'), {
      'usr/bin/hello': { content: readFileSync(join(project, 'examples/hello/hello.sh'), 'utf8'), mode: 0o755 },
    });
    writeFileSync(
      join(path, 'config.json'),
      JSON.stringify({
        ociVersion: '1.0.2',
        process: { cwd: '/', env: ['PATH=/usr/bin:/bin'], user: { uid: 0, gid: 0 }, ...processSpec },
        root: { path: 'rootfs', readonly: true },
        mounts: [{ destination: '/proc', type: 'proc', source: 'proc' }],
        ...extra,
      }),
    );
    return path;
  }

  // A failed test must not leave a VM running: it would slow every test after it (the lab has 2 CPUs).
  const children = new Set<ChildProcess>();
  const start = (...args: string[]): ChildProcess => {
    const child = spawn(process.execPath, [cli, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    child.on('exit', () => children.delete(child));
    return child;
  };
  afterEach(() => {
    for (const child of children) child.kill('SIGKILL');
  });
  const run = (...args: string[]): Promise<Result> => collect(start(...args)).done;

  it('runs the example bundle: its args and env reach the workload, its output reaches stdout', async () => {
    const example = JSON.parse(readFileSync(join(project, 'examples/hello/config.json'), 'utf8')) as {
      process: Record<string, unknown>;
      hostname: string;
      mounts: unknown[];
    };
    const path = await bundle('hello', example.process, { hostname: example.hostname, mounts: example.mounts });
    const before = hashTree(path);
    const r = await run('run', path);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^Hello from hello, a ts-vmm micro-VM running Linux /);
    expect(r.stdout).to.contain('args:\n  first argument\n  second\n');
    expect(r.stdout).to.contain('  GREETING=hello from config.json\n');
    expect(r.stdout).to.contain('  PATH=/usr/bin:/bin\n');
    expect(hashTree(path).hash, 'the bundle was modified').to.equal(before.hash);
  });

  it('propagates exit status 42; --timings says when each step of the run was done, in order', async () => {
    const r = await run('run', '--timings', await bundle('exit42', { args: ['sh', '-c', 'echo out; exit 42'] }));
    expect(r.status, r.stderr).to.equal(42);
    expect(r.stdout).to.equal('out\n');
    const steps = [...r.stderr.matchAll(/^ts-vmm: timings: +(\d+) ms {2}(.+)$/gm)].map((m) => ({ ms: Number(m[1]), step: m[2] }));
    expect(steps.map((s) => s.step)).to.include.members([
      'command line read (Node started, modules loaded)',
      'bundle read and checked',
      'VM launched',
      'guest agent connected',
      'workload sent',
      'workload started',
      'first workload output',
      'workload exited',
      'VM gone',
    ]);
    expect(steps.map((s) => s.ms)).to.deep.equal([...steps.map((s) => s.ms)].sort((x, y) => x - y));
    const rest = r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('ts-vmm: timings: '));
    expect(
      rest.filter((l) => !/^ts-vmm: (building|compiling|downloading|unpacking) /.test(l)),
      'nothing but timings and build progress',
    ).to.deep.equal([]);
  });

  it("binds host files in as copies, read-only where asked, and gives /dev/shm a tmpfs, as podman's bundles ask", async () => {
    const hosts = join(dir, 'copied-hosts');
    writeFileSync(hosts, '10.88.0.7 web\n');
    const path = await bundle(
      'binds',
      { args: ['sh', '-c', 'cat /etc/hosts; echo x >> /etc/hosts || echo read-only; grep " /dev/shm " /proc/mounts | cut -d" " -f3'] },
      {
        mounts: [
          { destination: '/proc', type: 'proc', source: 'proc' },
          { destination: '/etc/hosts', type: 'bind', source: hosts, options: ['bind', 'rprivate', 'ro'] },
          { destination: '/dev/shm', type: 'bind', source: '/nonexistent/shm', options: ['bind', 'rprivate', 'nosuid', 'noexec', 'nodev'] },
        ],
      },
    );
    const r = await run('run', path);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('10.88.0.7 web\nread-only\ntmpfs\n');
  });

  it('keeps stdout and stderr apart, free of kernel messages', async () => {
    const r = await run('run', await bundle('streams', { args: ['sh', '-c', 'echo to-out; echo to-err >&2; echo more-out'] }));
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('to-out\nmore-out\n');
    expect(workloadStderr(r.stderr)).to.equal('to-err\n');
  });

  it("keeps a read-write rootfs's writes across runs", async () => {
    const path = await bundle(
      'writable',
      { args: ['sh', '-c', 'cat /kept.txt 2>/dev/null || echo none; cat /proc/sys/kernel/random/uuid > /kept.txt; cat /kept.txt'] },
      { root: { path: 'rootfs', readonly: false } },
    );
    const first = await run('run', path);
    expect(first.status, first.stderr).to.equal(0);
    const [before, written] = first.stdout.trim().split('\n');
    expect(before).to.equal('none');
    const second = await run('run', path);
    expect(second.status, second.stderr).to.equal(0);
    expect(second.stdout.trim().split('\n')[0]).to.equal(written);
    expect(readFileSync(join(path, 'rootfs/etc/passwd'), 'utf8')).to.contain('root:');
    expect(() => readFileSync(join(path, 'rootfs/kept.txt'))).to.throw(/ENOENT/);
  });

  it('delivers SIGTERM to the workload, and tears down a workload that ignores it', async () => {
    const obeying = start('run', await bundle('sleeper', { args: ['sh', '-c', 'echo up; exec sleep 60'] }));
    const obeyed = collect(obeying);
    await waitForText(obeyed, 'up');
    obeying.kill('SIGTERM');
    expect((await obeyed.done).status).to.equal(128 + 15);

    const ignoring = start('run', await bundle('stubborn', { args: ['sh', '-c', 'trap "" TERM; echo up; while :; do sleep 1; done'] }));
    const ignored = collect(ignoring);
    await waitForText(ignored, 'up');
    const sent = Date.now();
    ignoring.kill('SIGTERM');
    expect((await ignored.done).status).to.equal(128 + 15);
    expect(Date.now() - sent).to.be.lessThan(30_000);
  });

  it('walks the OCI lifecycle: create, state, start, exec, kill, delete', async () => {
    const root = join(dir, 'oci-root');
    // The container's monitor is detached from this process: a failure part-way must still stop it.
    try {
      await lifecycle(root);
    } finally {
      await run('delete', '--force', '--root', root, 'c1');
    }
  });

  async function lifecycle(root: string): Promise<void> {
    const path = await bundle('lifecycle', { args: ['sh', '-c', 'trap "echo got-term; exit 3" TERM; echo started; while :; do sleep 0.2; done'] });
    const created = start('create', '--root', root, '--bundle', path, '--pid-file', join(dir, 'pid'), 'c1');
    // create exits once the container is created; the monitor it leaves keeps the container's stdio (these pipes).
    const container = collect(created);
    const [createStatus] = (await once(created, 'exit')) as [number];
    expect(createStatus, container.stderr()).to.equal(0);
    const state = async (): Promise<{ status: string; pid: number; id: string; bundle: string }> => {
      const r = await run('state', '--root', root, 'c1');
      expect(r.status, r.stderr).to.equal(0);
      return JSON.parse(r.stdout) as { status: string; pid: number; id: string; bundle: string };
    };
    const s1 = await state();
    expect(s1).to.deep.include({ id: 'c1', status: 'created', bundle: path });
    expect(Number(readFileSync(join(dir, 'pid'), 'utf8'))).to.equal(s1.pid);
    expect((await run('start', '--root', root, 'c1')).status).to.equal(0);
    expect((await state()).status).to.equal('running');
    await waitForText(container, 'started');
    // Two further processes at once, each with its own output and status.
    const [first, second] = await Promise.all([
      run('exec', '--root', root, 'c1', 'sh', '-c', 'echo first; exit 4'),
      run('exec', '--root', root, '-e', 'WHO=second', 'c1', 'sh', '-c', 'echo "$WHO" >&2; exit 5'),
    ]);
    expect([first.status, first.stdout, second.status, second.stderr]).to.deep.equal([4, 'first\n', 5, 'second\n']);
    expect((await run('delete', '--root', root, 'c1')).stderr).to.match(/is running/);
    expect((await run('kill', '--root', root, 'c1', 'TERM')).status).to.equal(0);
    expect((await container.done).stdout).to.equal('started\ngot-term\n');
    expect((await state()).status).to.equal('stopped');
    expect((await run('delete', '--root', root, 'c1')).status).to.equal(0);
    expect((await run('state', '--root', root, 'c1')).stderr).to.match(/"c1" does not exist/);
  }

  it('carries 10,000 environment variables and a 120 KB argument to the workload, on no command line', async () => {
    const big = 'y'.repeat(120 * 1024);
    const env = ['PATH=/usr/bin:/bin', ...Array.from({ length: 10_000 }, (_, i) => `V${i}=${i}`)];
    const r = await run(
      'run',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, for the guest's shell.
      await bundle('big-process', { args: ['sh', '-c', 'echo "$V0 $V9999 ${#1}"; env | grep -c "^V"; grep -c yyyy /proc/cmdline', 'sh', big], env }),
    );
    expect(r.stdout).to.equal(`0 9999 ${big.length}\n10000\n0\n`);
    expect(r.status, r.stderr).to.equal(1); // grep -c found no match in the kernel command line
  });

  it('leaves nothing of a container after kill KILL and delete, or after a create whose pid file cannot be written', async () => {
    const root = join(dir, 'oci-root-2');
    const tmp = join(dir, 'tmp-2');
    mkdirSync(tmp, { recursive: true });
    const path = await bundle('leftovers', { args: ['sh', '-c', 'echo started; while :; do sleep 0.2; done'] });
    const spawnWithTmp = (...args: string[]): ChildProcess => {
      const child = spawn(process.execPath, [cli, ...args], { env: { ...env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'] });
      children.add(child);
      child.on('exit', () => children.delete(child));
      return child;
    };
    const withTmp = (...args: string[]): Promise<Result> => collect(spawnWithTmp(...args)).done;
    // The state root keeps only the (empty) parent of the containers' socket directories.
    const expectEmptyRoot = (): void => {
      expect(readdirSync(root)).to.deep.equal(['.sockets']);
      expect(readdirSync(join(root, '.sockets'))).to.deep.equal([]);
    };
    try {
      // The monitor keeps create's stdio, so create's end is its exit, not the close of its pipes.
      const creating = spawnWithTmp('create', '--root', root, '--bundle', path, 'c2');
      const created = collect(creating);
      const [createStatus] = (await once(creating, 'exit')) as [number];
      expect(createStatus, created.stderr()).to.equal(0);
      const record = JSON.parse(readFileSync(join(root, 'c2', 'state.json'), 'utf8')) as { pid: number; vmm: { pid: number } };
      expect((await withTmp('start', '--root', root, 'c2')).status).to.equal(0);
      expect((await withTmp('kill', '--root', root, 'c2', 'KILL')).status).to.equal(0);
      const deleted = await withTmp('delete', '--root', root, 'c2');
      expect(deleted.status, deleted.stderr).to.equal(0);
      expectEmptyRoot();
      expect(readdirSync(tmp)).to.deep.equal([]);
      for (const pid of [record.pid, record.vmm.pid]) expect(processStartTime(pid), `process ${pid} outlived delete`).to.equal(undefined);

      const failed = await withTmp('create', '--root', root, '--bundle', path, '--pid-file', '/proc/no-pid-file-here', 'c3');
      expect(failed.status).to.equal(1);
      expect(failed.stderr).to.match(/^ts-vmm: --pid-file \/proc\/no-pid-file-here: [^\n]+\n$/);
      expectEmptyRoot();
      expect(readdirSync(tmp)).to.deep.equal([]);
    } finally {
      await run('delete', '--force', '--root', root, 'c2');
      await run('delete', '--force', '--root', root, 'c3');
    }
  });

  it('refuses a bundle whose entrypoint is missing, naming the file', async () => {
    const r = await run('run', await bundle('missing', { args: ['/usr/bin/nothere'] }));
    expect(r.status).to.equal(125);
    expect(r.stderr).to.match(/rootfs\/usr\/bin\/nothere: entrypoint "\/usr\/bin\/nothere" not found/);
  });
});
