import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseBundleConfig } from '../../src/oci/bundle-config.js';
import { agentArguments, GUEST, initScript, processWords, RUN_MODULES, shellQuote, type GuestLayout } from '../../src/oci/guest-init.js';
import { ensureBaseInitramfs, writeRunInitrd } from '../../src/oci/guest-initramfs.js';
import { PAGE_SIZE } from '../../src/sys/sys.js';
import { mountCall, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_STRICTATIME } from '../../src/oci/mount-options.js';

const bundle = (extra: Record<string, unknown> = {}) =>
  parseBundleConfig(
    JSON.stringify({
      ociVersion: '1.0.2',
      root: { path: 'rootfs' },
      process: { args: ['/bin/echo', "it's", 'a "test" $HOME `x`'], cwd: '/', env: ['A=1 2'], user: { uid: 1, gid: 2 } },
      ...extra,
    }),
    '/bundles/x',
  );

/** Runs `sh -c` and returns the NUL-separated words it prints. */
const shWords = (script: string): string[] => execFileSync('/bin/sh', ['-c', script]).toString().split('\0').slice(0, -1);

describe('guest init', () => {
  it('quotes any string so sh reads it back unchanged', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.string({ unit: 'grapheme' }).filter((s) => !s.includes('\0')),
          { minLength: 1, maxLength: 5 },
        ),
        (words) => {
          expect(shWords(`printf '%s\\0' ${words.map(shellQuote).join(' ')}`)).to.deep.equal(words);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('splits runtime-spec mount options into mount(2) flags and data', () => {
    expect(mountCall(['nosuid', 'strictatime', 'mode=755', 'size=65536k'])).to.deep.equal({ flags: MS_NOSUID | MS_STRICTATIME, data: 'mode=755,size=65536k' });
    expect(mountCall(['nosuid', 'noexec', 'nodev', 'ro'])).to.deep.equal({ flags: MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY, data: '' });
    expect(mountCall(['ro', 'rw', 'defaults'])).to.deep.equal({ flags: 0, data: '' });
  });

  it('gives the agent the setup on its command line and the process in its description, never on a command line', () => {
    const config = bundle({
      hostname: 'h1',
      process: {
        args: ['/bin/echo', "it's", 'a "test" $HOME `x`', 'secret-arg'],
        cwd: '/srv',
        env: ['A=1 2', 'TOKEN=secret-env'],
        user: { uid: 1, gid: 2, additionalGids: [3], umask: 0o22 },
        terminal: true,
        rlimits: [{ type: 'RLIMIT_NOFILE', soft: 10, hard: 20 }],
      },
    });
    const script = initScript(config, ['virtio_mmio.ko']);
    const execLine = script.trimEnd().split('\n').at(-1)!;
    expect(execLine.startsWith('exec /ts-vmm/agent ')).to.equal(true);
    expect(shWords(execLine.replace(/^exec \/ts-vmm\/agent/, "printf '%s\\0'"))).to.deep.equal(agentArguments(config));
    expect(script).not.to.contain('secret');
    const words = processWords(config.process);
    expect(words.slice(words.indexOf('--'))).to.deep.equal(['--', '/bin/echo', "it's", 'a "test" $HOME `x`', 'secret-arg']);
    const flag = (name: string) => words[words.indexOf(name) + 1];
    expect([flag('--cwd'), flag('--uid'), flag('--gid'), flag('--group'), flag('--umask'), flag('--rlimit'), flag('--env')]).to.deep.equal([
      '/srv',
      '1',
      '2',
      '3',
      '022',
      'RLIMIT_NOFILE=10:20',
      'A=1 2',
    ]);
    expect(words).to.include('--terminal');
    expect(agentArguments(config)).to.include.members(['--hostname', 'h1']);
  });

  it('gives the guest a devtmpfs /dev unless the bundle mounts one, and populates a tmpfs /dev', () => {
    const withoutDev = agentArguments(bundle());
    expect(withoutDev.slice(withoutDev.indexOf('--mount'), withoutDev.indexOf('--mount') + 6)).to.deep.equal([
      '--mount',
      'devtmpfs',
      'devtmpfs',
      '/dev',
      String(MS_NOSUID | MS_NOEXEC),
      '',
    ]);
    const tmpfsDev = agentArguments(bundle({ mounts: [{ destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['mode=755'] }] }));
    expect(tmpfsDev.filter((w) => w === '--mount')).to.have.length(1);
    expect(tmpfsDev).to.include('--populate-dev');
  });

  it('mounts a read-only root without replaying a journal, a writable one read-write', () => {
    expect(initScript(bundle({ root: { path: 'r', readonly: true } }), [])).to.match(/mount -t ext4 -o ro,noload \/dev\/vda \/newroot/);
    expect(initScript(bundle(), [])).to.match(/mount -t ext4 -o rw \/dev\/vda \/newroot/);
  });
});

/** Splits the stub's log: each call is its argument count, its program and its arguments, NUL-terminated. */
function calls(log: Buffer): string[][] {
  const words = log.toString('utf8').split('\0').slice(0, -1);
  const out: string[][] = [];
  for (let i = 0; i < words.length; ) {
    const n = Number(words[i]) + 1;
    out.push(words.slice(i + 1, i + 1 + n));
    i += 1 + n;
  }
  return out;
}

describe('guest init with hostile strings', function () {
  this.timeout(120000);
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-init-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  // Quotes, newlines, command substitutions, expansions, comment and list characters, and any other text.
  const hostile = fc.oneof(
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, for the guest's shell.
    fc.constantFrom('\n', "'", '"', '$(touch CANARY)', '`touch CANARY`', '$HOME', '\\', ';', '&', '|', '#', ' ', '*', '~', '${x:-y}', "'\n'"),
    fc.string({ unit: 'grapheme' }),
  );
  const text = fc.array(hostile, { minLength: 1, maxLength: 6 }).map((parts) => parts.join('').replaceAll('\0', ''));

  it('runs the generated /init in a stub guest: every value arrives as one word of data, nothing else runs', () => {
    // Each guest program is a stub that logs its arguments; the script runs under dash as it would under busybox sh.
    const layout: GuestLayout = {
      busybox: join(dir, 'busybox'),
      agent: join(dir, 'agent'),
      copiedFiles: join(dir, 'files'),
      modules: join(dir, 'modules'),
      newRoot: join(dir, 'newroot'),
      rootDevice: join(dir, 'vda'),
    };
    const log = join(dir, 'log');
    for (const stub of [layout.busybox, layout.agent]) {
      writeFileSync(stub, `#!/bin/sh\nprintf '%s\\0' "$#" "$0" "$@" >> '${log}'\n`, { mode: 0o755 });
    }
    fc.assert(
      fc.property(
        text,
        text,
        text,
        text,
        fc.array(
          text.map((t) => t.replaceAll('/', '')).filter((t) => t !== ''),
          { maxLength: 3 },
        ),
        (bundleName, destination, option, word, modules) => {
          const config = parseBundleConfig(
            JSON.stringify({
              ociVersion: '1.0.2',
              root: { path: 'rootfs' },
              process: { args: ['/bin/app', word], env: [`A=${word}`], cwd: `/${word}` },
              mounts: [{ destination: `/${destination.replaceAll('..', '')}`, type: 'tmpfs', source: word, options: [option] }],
            }),
            `/bundles/${bundleName}`,
          );
          rmSync(log, { force: true });
          rmSync(join(dir, 'CANARY'), { force: true });
          const script = join(dir, 'init');
          writeFileSync(script, initScript(config, modules, layout));
          execFileSync('dash', [script], { cwd: dir, env: { HOME: dir }, stdio: 'ignore' });
          expect(existsSync(join(dir, 'CANARY')), 'a value was run as a command').to.equal(false);
          expect(calls(readFileSync(log))).to.deep.equal([
            [layout.busybox, 'mount', '-t', 'proc', 'proc', '/proc'],
            [layout.busybox, 'mount', '-t', 'devtmpfs', 'devtmpfs', '/dev'],
            [layout.busybox, 'mkdir', '-p', '/dev/pts'],
            [layout.busybox, 'mount', '-t', 'devpts', '-o', 'ptmxmode=0666', 'devpts', '/dev/pts'],
            ...modules.map((m) => [layout.busybox, 'insmod', `${layout.modules}/${m}`]),
            [layout.busybox, 'test', '-b', layout.rootDevice],
            [layout.busybox, 'mkdir', '-p', layout.newRoot],
            [layout.busybox, 'mount', '-t', 'ext4', '-o', 'rw', layout.rootDevice, layout.newRoot],
            [layout.agent, ...agentArguments(config)],
          ]);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('keeps the real guest layout', () => {
    const script = initScript(bundle(), ['virtio_mmio.ko']);
    expect(script.startsWith(`#!${GUEST.busybox} sh\n`)).to.equal(true);
    expect(script).to.contain(`exec ${GUEST.agent} `);
  });
});

describe('guest initramfs', function () {
  this.timeout(30000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-initramfs-'));
    const modules = join(dir, 'modules');
    mkdirSync(join(modules, 'kernel'), { recursive: true });
    // A module tree shaped like Debian's: ext4 needs jbd2 and mbcache, the rest stand alone.
    const deps: Record<string, string[]> = { ext4: ['jbd2', 'mbcache'], jbd2: [], mbcache: [] };
    for (const m of RUN_MODULES) deps[m] ??= [];
    writeFileSync(
      join(modules, 'modules.dep'),
      Object.entries(deps)
        .map(([m, d]) => `kernel/${m}.ko: ${d.map((x) => `kernel/${x}.ko`).join(' ')}\n`)
        .join(''),
    );
    for (const m of Object.keys(deps)) writeFileSync(join(modules, 'kernel', `${m}.ko`), `module ${m}`);
    writeFileSync(join(dir, 'busybox'), 'busybox', { mode: 0o755 });
    writeFileSync(join(dir, 'agent'), 'agent', { mode: 0o755 });
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const software = () => ({ modulesDir: join(dir, 'modules'), busybox: join(dir, 'busybox'), agent: join(dir, 'agent') });
  const cpioList = (data: Buffer): string[] => execFileSync('cpio', ['-t', '--quiet'], { input: data }).toString().trim().split('\n');

  it('builds the shared base once, with dependencies before the modules needing them', async () => {
    const base = await ensureBaseInitramfs(software(), join(dir, 'cache'));
    expect(base.built).to.equal(true);
    expect(base.moduleFiles.indexOf('jbd2.ko')).to.be.lessThan(base.moduleFiles.indexOf('ext4.ko'));
    expect(base.moduleFiles.indexOf('mbcache.ko')).to.be.lessThan(base.moduleFiles.indexOf('ext4.ko'));
    const entries = cpioList(readFileSync(base.path));
    expect(entries).to.include.members([
      'bin/busybox',
      'ts-vmm/agent',
      'dev/console',
      'newroot',
      'lib/modules/ext4.ko',
      'lib/modules/vmw_vsock_virtio_transport.ko',
    ]);
    expect((await ensureBaseInitramfs(software(), join(dir, 'cache'))).built).to.equal(false);
  });

  it('gives a run the base archive, then a per-run archive holding /init', async () => {
    const base = await ensureBaseInitramfs(software(), join(dir, 'cache'));
    const [first, run, ...more] = await writeRunInitrd(base, bundle(), dir);
    expect(first).to.equal(base.path);
    expect(more).to.deep.equal([]);
    expect(cpioList(readFileSync(run!))).to.deep.equal(['init']);
    // The base ends on a page boundary (zeros after its trailer) so the VMM can map the run's archive right after it.
    const baseBytes = readFileSync(base.path);
    expect(baseBytes.length % PAGE_SIZE).to.equal(0);
    const trailerEnd = baseBytes.lastIndexOf('TRAILER!!!') + 'TRAILER!!!'.length + 1;
    expect(baseBytes.subarray(trailerEnd).every((b) => b === 0)).to.equal(true);
  });

  it('carries host files the bundle binds in as copies in the per-run archive, and has the agent bind each copy', async () => {
    const base = await ensureBaseInitramfs(software(), join(dir, 'cache'));
    writeFileSync(join(dir, 'hosts'), '127.0.0.1 localhost\n');
    writeFileSync(join(dir, 'resolv.conf'), 'nameserver 10.0.2.3\n');
    const config = bundle({
      mounts: [
        { destination: '/etc/hosts', type: 'bind', source: join(dir, 'hosts'), options: ['rbind'] },
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/etc/resolv.conf', type: 'bind', source: join(dir, 'resolv.conf'), options: ['bind', 'ro'] },
      ],
    });
    const run = readFileSync((await writeRunInitrd(base, config, dir))[1]!);
    expect(cpioList(run)).to.include.members(['ts-vmm/files/0', 'ts-vmm/files/1']);
    const extracted = join(dir, 'extracted');
    mkdirSync(extracted);
    execFileSync('cpio', ['-i', '-d', '--quiet'], { cwd: extracted, input: run });
    expect(readFileSync(join(extracted, 'ts-vmm/files/0'), 'utf8')).to.equal('127.0.0.1 localhost\n');
    expect(readFileSync(join(extracted, 'ts-vmm/files/1'), 'utf8')).to.equal('nameserver 10.0.2.3\n');
    const args = agentArguments(config);
    const mountOf = (target: string) => {
      const i = args.findIndex((a, k) => a === target && args[k - 3] === '--mount');
      return args.slice(i - 3, i + 3);
    };
    expect(mountOf('/etc/hosts')).to.deep.equal(['--mount', 'bind', '/ts-vmm/files/0', '/etc/hosts', '0', '']);
    expect(mountOf('/etc/resolv.conf')).to.deep.equal(['--mount', 'bind', '/ts-vmm/files/1', '/etc/resolv.conf', String(MS_RDONLY), '']);
  });

  it('names the missing module and the directory when the kernel lacks a driver', async () => {
    rmSync(join(dir, 'modules/kernel/virtio_blk.ko'));
    writeFileSync(join(dir, 'modules/modules.dep'), readFileSync(join(dir, 'modules/modules.dep'), 'utf8').replace(/^kernel\/virtio_blk.*\n/m, ''));
    await ensureBaseInitramfs(software(), join(dir, 'cache')).then(
      () => expect.fail('built without virtio_blk'),
      (e: Error) => expect(e.message).to.match(/kernel module virtio_blk not found under .*modules: ts-vmm run needs/),
    );
  });
});
