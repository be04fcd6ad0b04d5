import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { parseBundleConfig } from '../../src/oci/bundle-config.js';
import { lockFile, missingMountPoints, prepareRootDisk } from '../../src/oci/root-disk.js';
import { hashTree, sizeTree } from '../../src/oci/tree-hash.js';

const debugfs = (image: string, request: string): string => execFileSync('debugfs', ['-R', request, image], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();

describe('root disk', function () {
  this.timeout(30000);
  let dir: string;
  let savedState: string | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-disk-'));
    mkdirSync(join(dir, 'bundle/rootfs/bin'), { recursive: true });
    writeFileSync(join(dir, 'bundle/rootfs/bin/hello'), 'hello world\n', { mode: 0o755 });
    symlinkSync('hello', join(dir, 'bundle/rootfs/bin/hi'));
    savedState = process.env.TS_VMM_STATE;
    process.env.TS_VMM_STATE = join(dir, 'state');
  });
  afterEach(() => {
    if (savedState === undefined) delete process.env.TS_VMM_STATE;
    else process.env.TS_VMM_STATE = savedState;
    rmSync(dir, { recursive: true, force: true });
  });

  const config = (readonly: boolean, mounts: object[] = []) =>
    parseBundleConfig(
      JSON.stringify({
        ociVersion: '1.0.2',
        root: { path: 'rootfs', readonly },
        process: { args: ['/bin/hello'], cwd: '/' },
        mounts,
      }),
      join(dir, 'bundle'),
    );

  it('writes root disks readable by their owner only', async () => {
    for (const readonly of [true, false]) {
      const disk = await prepareRootDisk(config(readonly), { cacheDir: join(dir, 'cache') });
      expect(statSync(disk.path).mode & 0o777, disk.path).to.equal(0o600);
    }
  });

  it('hashes content, modes and links but not timestamps', async () => {
    const root = join(dir, 'bundle/rootfs');
    const first = hashTree(root);
    expect(first.entries).to.equal(4);
    expect(first.bytes).to.equal(12);
    expect(sizeTree(root), 'the size alone, without reading the files').to.deep.equal({ entries: 4, bytes: 12 });
    utimesSync(join(root, 'bin/hello'), new Date(0), new Date(0));
    expect(hashTree(root).hash).to.equal(first.hash);
    chmodSync(join(root, 'bin/hello'), 0o700);
    const afterChmod = hashTree(root).hash;
    expect(afterChmod).to.not.equal(first.hash);
    writeFileSync(join(root, 'bin/hello'), 'hello World\n');
    expect(hashTree(root).hash).to.not.equal(afterChmod);
  });

  it('builds a read-only ext4 image once per content and reuses it', async () => {
    const cacheDir = join(dir, 'cache');
    const first = await prepareRootDisk(config(true), { cacheDir });
    expect(first).to.deep.include({ readonly: true, built: true });
    expect(debugfs(first.path, 'cat /bin/hello')).to.equal('hello world\n');
    expect(debugfs(first.path, 'stat /bin/hi')).to.match(/Fast link dest: "hello"/);
    expect(debugfs(first.path, 'features')).to.not.match(/has_journal/);
    const second = await prepareRootDisk(config(true), { cacheDir });
    expect(second).to.deep.include({ path: first.path, built: false });
  });

  it('finds a settled rootfs by its stat fingerprint, and still sees a change that keeps size and mtime', async () => {
    const cacheDir = join(dir, 'cache');
    const records = (): string[] => (existsSync(join(cacheDir, 'rootfs/by-stat')) ? readdirSync(join(cacheDir, 'rootfs/by-stat')) : []);
    // Just written: not settled, so nothing is recorded (a change within the timestamps' step could go unseen).
    const fresh = await prepareRootDisk(config(true), { cacheDir });
    expect(records()).to.deep.equal([]);
    const later = (): number => Date.now() + 60_000;
    const first = await prepareRootDisk(config(true), { cacheDir, now: later });
    expect(first.path).to.equal(fresh.path);
    expect(records()).to.have.length(1);
    const record = join(cacheDir, 'rootfs/by-stat', records()[0]!);
    expect(statSync(record).mode & 0o777).to.equal(0o600);
    expect((await prepareRootDisk(config(true), { cacheDir, now: later })).path).to.equal(first.path);
    // The record is what answers: one naming another content gets that content's disk, no file of the tree read.
    const honest = readFileSync(record, 'utf8');
    writeFileSync(record, JSON.stringify({ ...JSON.parse(honest), hash: 'a'.repeat(64) }));
    expect(basename((await prepareRootDisk(config(true), { cacheDir, now: later })).path)).to.equal(`${'a'.repeat(32)}.ext4`);
    writeFileSync(record, honest);
    // Same size, mtime put back: only the change time (which nothing sets back) tells.
    const hello = join(dir, 'bundle/rootfs/bin/hello');
    const { atime, mtime } = statSync(hello);
    writeFileSync(hello, 'HELLO WORLD\n');
    utimesSync(hello, atime, mtime);
    const changed = await prepareRootDisk(config(true), { cacheDir, now: later });
    expect(changed.path).to.not.equal(first.path);
    expect(debugfs(changed.path, 'cat /bin/hello')).to.equal('HELLO WORLD\n');
    // A record that is not one is ignored: the content is hashed again.
    for (const name of records()) writeFileSync(join(cacheDir, 'rootfs/by-stat', name), '{"hash":"00"}');
    expect((await prepareRootDisk(config(true), { cacheDir, now: later })).path).to.equal(changed.path);
  });

  it('carries on a read-only disk the mount points the rootfs lacks (runc makes them before the root turns read-only)', async () => {
    const hostFile = join(dir, 'resolv.conf');
    writeFileSync(hostFile, 'nameserver 10.0.0.1\n');
    const mounts = [
      { destination: '/etc/resolv.conf', type: 'bind', source: hostFile, options: ['rbind', 'ro'] },
      { destination: '/dev/shm', type: 'bind', source: dir, options: ['rbind'] },
      { destination: '/bin/hi/x', type: 'tmpfs', source: 'tmpfs' },
      { destination: '/bin', type: 'tmpfs', source: 'tmpfs' },
    ];
    const withMounts = config(true, mounts);
    expect(missingMountPoints(withMounts)).to.deep.equal([
      { path: '/etc', kind: 'directory' },
      { path: '/etc/resolv.conf', kind: 'file' },
      { path: '/dev', kind: 'directory' },
      { path: '/dev/shm', kind: 'directory' },
    ]);
    const cacheDir = join(dir, 'cache');
    const disk = await prepareRootDisk(withMounts, { cacheDir });
    expect(debugfs(disk.path, 'stat /etc/resolv.conf')).to.match(/Type: regular\s+Mode:\s+0644/);
    expect(debugfs(disk.path, 'stat /etc/resolv.conf')).to.match(/Size: 0\b/);
    expect(debugfs(disk.path, 'stat /dev/shm')).to.match(/Type: directory\s+Mode:\s+0755/);
    execFileSync('e2fsck', ['-fn', disk.path], { stdio: 'ignore' });
    expect((await prepareRootDisk(config(true), { cacheDir })).path, 'the same rootfs without those mounts has a disk of its own').to.not.equal(disk.path);
    expect(existsSync(join(dir, 'bundle/rootfs/etc')), 'nothing written into the bundle').to.equal(false);
  });

  it('gives a read-write rootfs its own journaled disk in the bundle state dir, kept across runs', async () => {
    const cacheDir = join(dir, 'cache');
    const first = await prepareRootDisk(config(false), { cacheDir, writableFreeMiB: 16 });
    expect(first).to.deep.include({ readonly: false, built: true });
    expect(first.path.startsWith(join(dir, 'state', 'bundles', 'bundle-'))).to.equal(true);
    expect(debugfs(first.path, 'features')).to.match(/has_journal/);
    const mtime = statSync(first.path).mtimeMs;
    const second = await prepareRootDisk(config(false), { cacheDir });
    expect(second).to.deep.include({ path: first.path, built: false });
    expect(second.staleWarning).to.equal(undefined);
    expect(statSync(first.path).mtimeMs).to.equal(mtime);
    writeFileSync(join(dir, 'bundle/rootfs/new'), 'x');
    const third = await prepareRootDisk(config(false), { cacheDir });
    expect(third.staleWarning).to.match(/rootfs changed since .*rootfs\.ext4 was made from it/);
  });

  it('never writes into the bundle', async () => {
    const before = hashTree(join(dir, 'bundle'));
    await prepareRootDisk(config(true), { cacheDir: join(dir, 'cache') });
    await prepareRootDisk(config(false), { cacheDir: join(dir, 'cache'), writableFreeMiB: 16 });
    expect(hashTree(join(dir, 'bundle')).hash).to.equal(before.hash);
  });

  it("locks a disk against a second user and takes over a dead owner's lock", async () => {
    const lock = join(dir, 'disk.lock');
    const release = await lockFile(lock);
    await lockFile(lock).then(
      () => expect.fail('second lock granted'),
      (e: Error) => expect(e.message).to.match(/in use by ts-vmm process \d+/),
    );
    await release();
    writeFileSync(lock, '999999999');
    const again = await lockFile(lock);
    await again();
  });
});
