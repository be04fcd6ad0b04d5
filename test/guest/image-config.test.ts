// The real guest agent with `--image-config`, on the host over a Unix socket: the process an OCI image
// configuration names (buildah mkcw's /.krun_config.json), run chrooted into a root that holds a static probe,
// which reports its arguments, environment, identity and working directory.
import { expect } from 'chai';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { shellStatus } from '../../src/oci/agent-protocol.js';
import { ensureGuestAgent } from '../../src/oci/guest-agent.js';
import { WorkloadIo } from '../../src/oci/workload-io.js';
import { projectFile } from '../../src/sys/project-paths.js';

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

interface Observed {
  id: string;
  groups: string;
  cwd: string;
  args: string[];
  env: string[];
}

/** The probe's NUL-terminated name/value fields. */
function parseProbe(output: Buffer): Observed {
  const parts = output.toString('utf8').split('\0').slice(0, -1);
  const seen: Observed = { id: '', groups: '', cwd: '', args: [], env: [] };
  for (let i = 0; i + 1 < parts.length; i += 2) {
    const [name, value] = [parts[i]!, parts[i + 1]!];
    if (name === 'arg') seen.args.push(value);
    else if (name === 'env') seen.env.push(value);
    else if (name === 'id' || name === 'groups' || name === 'cwd') seen[name] = value;
  }
  return seen;
}

/** JSON as another encoder may write it: every non-ASCII code unit and some slashes escaped, any indentation. */
function reencode(value: unknown, escapeAll: boolean, indent: number): string {
  const text = JSON.stringify(value, null, indent);
  if (!escapeAll) return text;
  return text.replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).replace(/\//g, '\\/');
}

describe('the guest agent runs the process an OCI image configuration names (--image-config)', function () {
  this.timeout(120_000);
  let dir: string;
  let root: string;
  let agent: string;
  const children: ChildProcess[] = [];

  before(async function () {
    if (process.getuid?.() !== 0) this.skip(); // the agent chroots and sets the process's user, as in the guest
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-image-config-'));
    agent = await ensureGuestAgent(join(dir, 'cache'));
    root = join(dir, 'root');
    for (const d of ['etc', 'work', 'home/app']) mkdirSync(join(root, d), { recursive: true });
    execFileSync('gcc', ['-static', '-O2', '-o', join(root, 'probe'), projectFile('test', 'guest', 'process-probe.c')]);
    writeFileSync(
      join(root, 'etc/passwd'),
      'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
    );
    writeFileSync(join(root, 'etc/group'), 'root:x:0:\nwheel:x:10:root\napp:x:1000:\nextra:x:2000:nobody,app\nmore:x:3000:app\nstaff:x:50:\n');
  });
  after(() => {
    for (const c of children) c.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Starts the agent on `config` (the file's bytes); resolves with what the probe saw, or the agent's refusal. */
  async function runImage(config: string | Buffer): Promise<{ status: number; seen: Observed } | { refused: string; code: number | null }> {
    const n = children.length;
    const file = join(dir, `config-${n}.json`);
    writeFileSync(file, config);
    const socket = join(dir, `s${n}`);
    const stdout: Buffer[] = [];
    const out = new PassThrough().on('data', (c: Buffer) => stdout.push(c));
    const io = await WorkloadIo.listen(socket, { stdin: undefined, stdout: out, stderr: new PassThrough() }, () => undefined);
    const child = spawn(agent, ['--unix', socket, '--root', root, '--image-config', file], { stdio: 'ignore' });
    children.push(child);
    const exited = once(child, 'exit') as Promise<[number | null]>;
    try {
      await io.whenReady();
    } catch (e) {
      io.close();
      return { refused: (e as Error).message, code: (await exited)[0] };
    }
    io.start([]);
    const status = shellStatus(await io.whenExited());
    io.close();
    await exited;
    return { status, seen: parseProbe(Buffer.concat(stdout)) };
  }

  async function seen(config: unknown): Promise<Observed> {
    const r = await runImage(JSON.stringify(config));
    if ('refused' in r) throw new Error(r.refused);
    expect(r.status).to.equal(0);
    return r.seen;
  }

  it("runs Entrypoint then Cmd with the image's Env, WorkingDir and User (groups from the image's /etc/group), not docker's container_config", async () => {
    const r = await seen({
      created: '2026-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      container_config: { Cmd: ['/decoy'], Env: ['DECOY=1'], User: 'nobody' },
      config: {
        User: 'app',
        Env: ['GREETING=hello world', 'PATH=/bin'],
        Entrypoint: ['/probe', 'first'],
        Cmd: ['second', ''],
        WorkingDir: '/work',
        Labels: { a: 'b' },
      },
      rootfs: { type: 'layers', diff_ids: ['sha256:00'] },
      history: [{ created_by: '/bin/sh -c #(nop) CMD ["/decoy"]', empty_layer: true }],
    });
    expect(r).to.deep.equal({
      id: '1000:1000',
      groups: '2000,3000',
      cwd: '/work',
      args: ['/probe', 'first', 'second', ''],
      env: ['HOME=/home/app', 'GREETING=hello world', 'PATH=/bin'],
    });
  });

  it('takes the user as runc does: none, a uid, uid:gid, name:group, a uid the image does not list', async () => {
    const cases: [string | null, string, string, string][] = [
      [null, '0:0', '10', 'HOME=/root'],
      ['65534', '65534:65534', '2000', 'HOME=/nonexistent'],
      ['1000:50', '1000:50', '', 'HOME=/home/app'],
      ['app:staff', '1000:50', '', 'HOME=/home/app'],
      ['4242', '4242:0', '', 'HOME=/'],
    ];
    for (const [user, id, groups, home] of cases) {
      const r = await seen({ config: { ...(user === null ? {} : { User: user }), Cmd: ['/probe'] } });
      expect({ user, id: r.id, groups: r.groups, env: r.env }).to.deep.equal({ user, id, groups, env: [DEFAULT_PATH, home] });
      expect(r.cwd).to.equal('/');
    }
  });

  it('reads any JSON encoding of any arguments and environment exactly (property)', async () => {
    const word = fc.string({ unit: 'binary', maxLength: 12 }).filter((s) => !s.includes('\0'));
    await fc.assert(
      fc.asyncProperty(
        fc.array(word, { maxLength: 4 }),
        fc.array(fc.tuple(fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,6}$/), word), { maxLength: 4 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 3 }),
        async (args, variables, escapeAll, indent) => {
          const env = ['HOME=/h', 'PATH=/p', ...variables.map(([k, v]) => `${k}=${v}`)];
          const r = await runImage(reencode({ config: { Entrypoint: ['/probe'], Cmd: args, Env: env } }, escapeAll, indent));
          if ('refused' in r) throw new Error(r.refused);
          expect(r.seen.args).to.deep.equal(['/probe', ...args]);
          expect(r.seen.env).to.deep.equal(env);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('refuses what is not such a configuration with one line naming the problem, exit status 125', async () => {
    const deep = `{"x":${'['.repeat(100)}${']'.repeat(100)},"config":{"Cmd":["/probe"]}}`;
    const cases: [string | Buffer, string][] = [
      ['{"config": {"Cmd": ["/probe"]', 'unexpected end at byte 29'],
      ['["/probe"]', 'the image config is not a JSON object at byte 0'],
      ['{"config": {"Cmd": ["/probe"]}} trailing', 'text after the JSON object at byte 32'],
      ['{"config": {"Cmd": ["/probe",]}}', 'expected a string at byte 29'],
      ['{"config": {"Cmd": "/probe"}}', 'expected an array of strings at byte 19'],
      ['{"config": {"Cmd": ["/pro\\u0000be"]}}', 'NUL in a string at byte 31'],
      ['{"config": {"Cmd": ["\\ud800x"]}}', 'lone high surrogate at byte 27'],
      ['{"config": {"Cmd": ["\\udc00"]}}', 'lone low surrogate at byte 27'],
      ['{"config": {"Cmd": ["a\tb"]}}', 'control character in a string at byte 23'],
      ['{"config": {"Cmd": ["\\q"]}}', 'bad escape at byte 23'],
      ['{"config": {"Cmd": [01]}}', 'expected a string at byte 20'],
      ['{"n": 01, "config": {"Cmd": ["/probe"]}}', "expected ',' or the end of the object or array at byte 7"],
      [deep, 'nested too deeply at byte 69'],
      ['{"config": {"Env": ["A=1"]}}', 'names no command (neither Entrypoint nor Cmd)'],
      ['{"config": {"Cmd": ["/probe"], "WorkingDir": "work"}}', 'WorkingDir "work" is not an absolute path'],
      ['{"config": {"Cmd": ["/probe"], "Env": ["JUSTANAME"]}}', 'Env entry "JUSTANAME" is not NAME=VALUE'],
      ['{"config": {"Cmd": ["/probe"], "User": "ghost"}}', `User "ghost": no such user in the image's /etc/passwd`],
      ['{"config": {"Cmd": ["/probe"], "User": "app:ghosts"}}', `User "app:ghosts": no such group in the image's /etc/group`],
      ['{"config": {"Cmd": ["/probe"], "User": "99999999999"}}', 'User "99999999999": uid out of range'],
      [Buffer.alloc(4 << 20, 0x20), 'bytes or more'],
    ];
    for (const [config, problem] of cases) {
      const r = await runImage(config);
      expect(r, String(config).slice(0, 80)).to.have.property('refused');
      if (!('refused' in r)) continue;
      expect(r.refused).to.match(/^the guest could not set up the container: image config\b/);
      expect(r.refused).to.contain(problem);
      expect(r.refused).to.not.contain('\n');
      expect(r.code).to.equal(125);
    }
  });

  it('takes no process from the host, and no exec listener, beside the image', async () => {
    const file = join(dir, 'host-process.json');
    writeFileSync(file, JSON.stringify({ config: { Cmd: ['/probe'] } }));
    const socket = join(dir, 'host-process');
    const errors: string[] = [];
    const io = await WorkloadIo.listen(socket, { stdin: undefined, stdout: new PassThrough(), stderr: new PassThrough() }, (m) => errors.push(m));
    const child = spawn(agent, ['--unix', socket, '--root', root, '--image-config', file], { stdio: 'ignore' });
    children.push(child);
    await io.whenReady();
    io.start(['--', '/probe', 'chosen by the host']);
    const [code] = (await once(child, 'exit')) as [number];
    io.close();
    expect(code).to.equal(125);
    expect(errors.join('\n')).to.contain("the host sent a process, but this workload's process comes from its image");

    const listener = spawnSync(agent, ['--unix', socket, '--image-config', file, '--exec-listen', join(dir, 'exec')], { encoding: 'utf8' });
    expect([listener.status, listener.stderr.trim()]).to.deep.equal([
      125,
      'ts-vmm-agent: --exec-listen with --process-file or --image-config: an image that names its process takes no other',
    ]);
  });
});
