// The real guest agent, built from src/guest/agent.c, run on the host over a Unix socket: the same binary and
// protocol the VM uses, without a VM.
import { expect } from 'chai';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { encodeWords, shellStatus } from '../../src/oci/agent-protocol.js';
import { ensureGuestAgent } from '../../src/oci/guest-agent.js';
import { WorkloadIo } from '../../src/oci/workload-io.js';
import { relayExec } from '../../src/oci/exec.js';

function collector(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString() };
}

describe('workload I/O with the guest agent over a Unix socket', function () {
  this.timeout(60000);
  let dir: string;
  let agent: string;
  const children: ChildProcess[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-agent-'));
    agent = await ensureGuestAgent(join(dir, 'cache'));
  });
  after(() => {
    for (const c of children) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs the process described by `process` (processWords' form) in the agent, started with only `--unix`. */
  async function run(
    process: string[],
    options: { stdin?: Readable; signalAfterMs?: number; window?: { rows: number; columns: number }; agentArgs?: (socket: string) => string[] } = {},
  ) {
    const socket = join(dir, `s${children.length}`);
    const out = collector();
    const err = collector();
    const errors: string[] = [];
    const io = await WorkloadIo.listen(socket, { stdin: options.stdin, stdout: out.stream, stderr: err.stream }, (m) => errors.push(m));
    const child = spawn(agent, options.agentArgs?.(socket) ?? ['--unix', socket], { stdio: ['ignore', 'inherit', 'inherit'] });
    children.push(child);
    await io.whenReady();
    io.start(process, options.window);
    if (options.signalAfterMs !== undefined) setTimeout(() => io.signal(15), options.signalAfterMs);
    const status = await io.whenExited();
    io.close();
    return { status: shellStatus(status), stdout: out.text(), stderr: err.text(), errors };
  }

  it('keeps stdout and stderr apart and propagates exit status 42', async () => {
    const r = await run(['--', '/bin/sh', '-c', 'echo out; echo err >&2; echo out2; exit 42']);
    expect(r).to.deep.include({ status: 42, stdout: 'out\nout2\n', stderr: 'err\n' });
  });

  it('passes args, only the given env, cwd and user', async () => {
    const r = await run([
      '--env',
      'FOO=bar baz',
      '--env',
      'PATH=/usr/bin:/bin',
      '--cwd',
      '/tmp',
      '--uid',
      '65534',
      '--gid',
      '65534',
      '--',
      'sh',
      '-c',
      'echo "$0|$1|$FOO|$(pwd)|$(id -u):$(id -g)"; env | sort',
      'arg zero',
      'arg one',
    ]);
    expect(r.status).to.equal(0);
    const [first, ...env] = r.stdout.trim().split('\n');
    expect(first).to.equal('arg zero|arg one|bar baz|/tmp|65534:65534');
    expect(env.filter((e) => !e.startsWith('PWD=') && !e.startsWith('SHLVL=') && !e.startsWith('_='))).to.deep.equal(['FOO=bar baz', 'PATH=/usr/bin:/bin']);
  });

  it('forwards stdin to the process and closes it at EOF', async () => {
    const r = await run(['--', '/bin/sh', '-c', 'tr a-z A-Z; echo done'], { stdin: Readable.from([Buffer.from('hello '), Buffer.from('world\n')]) });
    expect(r).to.deep.include({ status: 0, stdout: 'HELLO WORLD\ndone\n' });
  });

  it('delivers a signal to the process; death by signal is 128+n', async () => {
    const r = await run(['--', '/bin/sleep', '30'], { signalAfterMs: 200 });
    expect(r.status).to.equal(128 + 15);
  });

  it('reports a missing program as an error line and status 127', async () => {
    const r = await run(['--env', 'PATH=/nonexistent', '--', 'no-such-program']);
    expect(r.status).to.equal(127);
    expect(r.errors).to.deep.equal(['exec no-such-program: No such file or directory']);
  });

  it('runs the process on a terminal of the requested size', async () => {
    const r = await run(['--terminal', '--', '/bin/sh', '-c', 'test -t 0 && test -t 1 && stty size'], { window: { rows: 33, columns: 101 } });
    expect(r).to.deep.include({ status: 0, stdout: '33 101\r\n' });
  });

  it('takes the connection that says READY, leaving an abandoned earlier attempt alone', async () => {
    const socket = join(dir, 'retry');
    const out = collector();
    const io = await WorkloadIo.listen(socket, { stdin: undefined, stdout: out.stream, stderr: new PassThrough() }, () => undefined);
    const abandoned = connect(socket);
    await once(abandoned, 'connect');
    children.push(spawn(agent, ['--unix', socket], { stdio: 'ignore' }));
    await io.whenReady();
    io.start(['--', '/bin/sh', '-c', 'echo second; exit 3']);
    expect(shellStatus(await io.whenExited())).to.equal(3);
    expect(out.text()).to.equal('second\n');
    expect(abandoned.destroyed).to.equal(false);
    io.close();
    await once(abandoned, 'close');
  });

  it("refuses to start when the container cannot be set up, with the agent's reason", async () => {
    const socket = join(dir, 'setup-failure');
    const io = await WorkloadIo.listen(socket, { stdin: undefined, stdout: new PassThrough(), stderr: new PassThrough() }, () => undefined);
    const target = join(dir, 'mountpoint');
    children.push(spawn(agent, ['--unix', socket, '--mount', 'no-such-fs', 'none', target, '0', ''], { stdio: 'ignore' }));
    await io.whenReady().then(
      () => expect.fail('became ready'),
      (e: Error) => expect(e.message).to.equal(`the guest could not set up the container: mount ${target}: No such device`),
    );
    io.close();
  });

  it("takes its setup and process from words files (a confidential image's), and refuses a process from the host then", async () => {
    const processFile = join(dir, 'process.words');
    writeFileSync(processFile, encodeWords(['--env', 'WHERE=image', '--', '/bin/sh', '-c', 'echo "from the $WHERE"; exit 7']));
    const setupFile = (socket: string): string => {
      const file = `${socket}.setup`;
      writeFileSync(file, encodeWords(['--unix', socket, '--process-file', processFile]));
      return file;
    };
    const fromImage = await run([], { agentArgs: (socket) => ['--setup-file', setupFile(socket)] });
    expect(fromImage).to.deep.include({ status: 7, stdout: 'from the image\n', stderr: '' });

    const socket = join(dir, 'hostile-host');
    const errors: string[] = [];
    const io = await WorkloadIo.listen(socket, { stdin: undefined, stdout: new PassThrough(), stderr: new PassThrough() }, (m) => errors.push(m));
    const child = spawn(agent, ['--setup-file', setupFile(socket)], { stdio: 'ignore' });
    children.push(child);
    await io.whenReady();
    io.start(['--', '/bin/echo', 'chosen by the host']);
    const [code] = (await once(child, 'exit')) as [number];
    io.close();
    expect(code).to.equal(125);
    expect(errors.join('\n')).to.contain("the host sent a process, but this workload's process comes from its image");
  });

  it('takes the launch secret from its slot: the bytes before the first NUL, then the slot is zeroed and removed', async () => {
    const slot = join(dir, 'slot');
    writeFileSync(slot, Buffer.concat([Buffer.from('correct horse'), Buffer.alloc(4096 - 13)]));
    const taken = spawnSync(agent, ['--take-secret', slot]);
    expect(taken.status).to.equal(0);
    expect(taken.stdout.toString('latin1')).to.equal('correct horse');
    expect(existsSync(slot)).to.equal(false);

    writeFileSync(slot, Buffer.alloc(4096));
    const empty = spawnSync(agent, ['--take-secret', slot]);
    expect(empty.status).to.equal(1);
    expect(empty.stdout.length).to.equal(0);
    expect(empty.stderr.toString()).to.contain('the launch secret slot is empty');
  });

  it('passes 10,000 environment variables and a 120 KB argument (no command-line limits on the way)', async () => {
    const env = Array.from({ length: 10_000 }, (_, i) => ['--env', `V${i}=${i}`]).flat();
    const big = 'x'.repeat(120 * 1024);
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, for the guest's shell.
    const r = await run([...env, '--', '/bin/sh', '-c', 'echo "$V0 $V9999 ${#1}"; env | grep -c "^V"', 'sh', big]);
    expect(r).to.deep.include({ status: 0, stdout: `0 9999 ${big.length}\n10000\n` });
  });

  it('applies rlimits and umask, the last of two limits on one resource', async () => {
    const r0 = await run([
      '--rlimit',
      'RLIMIT_NOFILE=11:22',
      '--rlimit',
      'RLIMIT_NOFILE=77:88',
      '--umask',
      '0027',
      '--',
      '/bin/sh',
      '-c',
      'ulimit -n; ulimit -Hn; umask',
    ]);
    expect(r0).to.deep.include({ status: 0, stdout: '77\n88\n0027\n' });
  });

  describe("exec: further processes through the agent's exec listener", () => {
    /** A container whose process waits for its stdin to end; `finish()` ends it and returns its status. */
    async function container(name: string) {
      const socket = join(dir, name);
      const execSocket = `${socket}.exec`;
      const stdin = new PassThrough();
      const out = collector();
      const io = await WorkloadIo.listen(socket, { stdin, stdout: out.stream, stderr: new PassThrough() }, () => undefined);
      children.push(spawn(agent, ['--unix', socket, '--exec-listen', execSocket], { stdio: 'ignore' }));
      await io.whenReady();
      io.start(['--', '/bin/sh', '-c', 'cat > /dev/null; echo main done']);
      return {
        target: { socket: execSocket },
        finish: async () => {
          stdin.end();
          const status = shellStatus(await io.whenExited());
          io.close();
          return { status, stdout: out.text() };
        },
      };
    }

    async function exec(target: { socket: string }, words: string[], options: { terminal?: boolean; stdin?: Readable } = {}) {
      const out = collector();
      const err = collector();
      const errors: string[] = [];
      /** What `started` was told: 'running', or the reason the program could not start. */
      let start = 'not told';
      const status = await relayExec(
        target,
        { words, terminal: options.terminal === true },
        { stdin: options.stdin, stdout: out.stream, stderr: err.stream },
        (m) => errors.push(m),
        (failure) => {
          start = failure === undefined ? 'running' : failure.message;
        },
      );
      return { status, stdout: out.text(), stderr: err.text(), errors, start };
    }

    it("runs processes beside the container's, each with its own output, stdin and exit status, several at once", async () => {
      const c = await container('several');
      const [a, b] = await Promise.all([
        exec(c.target, ['--env', 'WHO=a', '--', '/bin/sh', '-c', 'echo "out $WHO"; echo "err $WHO" >&2; exit 7']),
        exec(c.target, ['--', '/bin/sh', '-c', 'read line; echo "got $line"'], { stdin: Readable.from([Buffer.from('hello\n')]) }),
      ]);
      expect(a).to.deep.include({ status: 7, stdout: 'out a\n', stderr: 'err a\n', start: 'running' });
      expect(b).to.deep.include({ status: 0, stdout: 'got hello\n' });
      expect(await c.finish()).to.deep.equal({ status: 0, stdout: 'main done\n' });
    });

    it('says when the program cannot be started (status 127), and the container goes on', async () => {
      const c = await container('missing');
      const r = await exec(c.target, ['--env', 'PATH=/nonexistent', '--', 'no-such-program']);
      expect(r.status).to.equal(127);
      expect(r.start).to.equal('exec no-such-program: No such file or directory');
      expect(await c.finish()).to.deep.equal({ status: 0, stdout: 'main done\n' });
    });

    it('gives an exec its own terminal', async () => {
      const c = await container('terminal');
      const r = await exec(c.target, ['--terminal', '--', '/bin/sh', '-c', 'test -t 0 && test -t 1 && echo on a terminal']);
      expect(r).to.deep.include({ status: 0, stdout: 'on a terminal\r\n' });
      await c.finish();
    });

    it('ends an exec with the container: its status is that of SIGKILL', async () => {
      const c = await container('ends');
      const running = exec(c.target, ['--', '/bin/sh', '-c', 'echo up; exec sleep 30']);
      await new Promise((r) => setTimeout(r, 300));
      expect((await c.finish()).status).to.equal(0);
      expect(await running).to.deep.include({ status: 137, stdout: 'up\n' });
    });

    it('refuses an exec listener beside a process from the image', () => {
      const r = spawnSync(agent, ['--unix', join(dir, 'x'), '--process-file', join(dir, 'p'), '--exec-listen', join(dir, 'y')], { encoding: 'utf8' });
      expect([r.status, r.stderr.trim()]).to.deep.equal([
        125,
        'ts-vmm-agent: --exec-listen with --process-file or --image-config: an image that names its process takes no other',
      ]);
    });
  });
});
