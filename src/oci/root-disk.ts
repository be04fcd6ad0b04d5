// Turns a bundle's rootfs directory into the ext4 image the guest boots from, with Debian's `mke2fs -d`.
// mke2fs is the reference ext4 writer: it gets extents, htree directories, xattrs, hard links and special files
// right, and is as fast as the disk; an ext4 writer in TypeScript would be a second, less tested implementation
// of the same format for no gain. The trade-off is a host dependency on e2fsprogs.
//
// A read-only rootfs is built once per content (see tree-hash.ts) into the cache and shared by every bundle with
// that content. The content hash of a tree already seen is found by the tree's stat fingerprint, so a warm run reads
// no file of the rootfs. A read-write rootfs gets a disk of its own in the bundle's state directory, built on its first
// run and reused afterwards, so what the workload writes is there on the next run (and can be inspected with
// e.g. `debugfs` or a loop mount).
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { BundleConfig } from './bundle-config.js';
import { bundleStateDir } from './paths.js';
import { hashTree, statFingerprint, type TreeSize, type TreeSummary } from './tree-hash.js';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;
const BLOCK = 4096;

export interface RootDisk {
  /** The image file to attach as the guest's first virtio-blk disk. */
  path: string;
  readonly: boolean;
  /** True when this call had to build the image (a cold start). */
  built: boolean;
  /** Set when a read-write disk was made from a rootfs whose content has changed since. */
  staleWarning?: string;
}

export interface RootDiskOptions {
  /** The image cache, for read-only root disks. */
  cacheDir: string;
  /** Free space a read-write disk gets beyond its content. */
  writableFreeMiB?: number;
  log?: (message: string) => void;
  /** The clock that tells whether the rootfs has settled (Date.now). */
  now?: () => number;
}

export const DEFAULT_WRITABLE_FREE_MIB = 512;

/** Changes this recent are not trusted to a fingerprint: some filesystems keep timestamps in steps of 2 s (FAT). */
const SETTLED_MS = 3_000;

/**
 * The rootfs's content hash, found by its stat fingerprint where an earlier run hashed the same settled tree, else
 * computed (and recorded, once the tree has settled). Hashing busybox's 2 MiB cost a warm run 0.1–0.2 s under TCG.
 */
function treeSummary(rootfs: string, cacheDir: string, now: number): TreeSummary {
  const { fingerprint, newestChangeMs } = statFingerprint(rootfs);
  const record = join(cacheDir, 'rootfs', 'by-stat', `${fingerprint.slice(0, 32)}.json`);
  const recorded = recordedSummary(record);
  if (recorded) return recorded;
  const summary = hashTree(rootfs);
  if (now - newestChangeMs > SETTLED_MS) {
    mkdirSync(join(record, '..'), { recursive: true, mode: 0o700 });
    const partial = `${record}.${process.pid}.partial`;
    writeFileSync(partial, JSON.stringify(summary), { mode: 0o600 });
    renameSync(partial, record);
  }
  return summary;
}

/** A summary recorded by treeSummary; anything else there (a torn or foreign file) counts as none. */
function recordedSummary(path: string): TreeSummary | undefined {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return undefined;
  }
  const { hash, bytes, entries } = (value ?? {}) as Partial<TreeSummary>;
  if (typeof hash !== 'string' || !/^[0-9a-f]{64}$/.test(hash)) return undefined;
  if (!Number.isSafeInteger(bytes) || bytes! < 0 || !Number.isSafeInteger(entries) || entries! < 1) return undefined;
  return { hash, bytes: bytes!, entries: entries! };
}

/** Image size for a tree: content rounded to blocks plus one block per entry, 10% slack, the free space asked for. */
export function imageSizeBytes(summary: TreeSize, freeMiB: number): number {
  const used = summary.bytes + summary.entries * BLOCK;
  return Math.ceil((used * 1.1 + (freeMiB + 8) * MiB) / MiB) * MiB;
}

/** A mount point a read-only root disk carries because the guest could not make it there. */
export interface MountPoint {
  path: string;
  kind: 'file' | 'directory';
}

/**
 * The bundle's mount destinations, with their parents, that the rootfs lacks. runc makes them in the rootfs before
 * it remounts it read-only (a Kubernetes pod's sandbox has a read-only root and is given /etc/resolv.conf); the
 * guest cannot write a read-only disk, so such a disk is built with them. A symlink or a file on the way ends the
 * walk (the guest resolves it inside the root), as does a name debugfs cannot take.
 */
export function missingMountPoints(config: BundleConfig): MountPoint[] {
  const points = new Map<string, MountPoint['kind']>();
  for (const mount of config.mounts) {
    const parts = mount.destination.split('/').filter((part) => part !== '' && part !== '.');
    if (parts.includes('..')) continue;
    for (let i = 1; i <= parts.length; i++) {
      const path = `/${parts.slice(0, i).join('/')}`;
      if (/[\s"'\\]/.test(path)) break;
      if (points.has(path)) continue;
      const stat = lstatSync(join(config.rootfs, path), { throwIfNoEntry: false });
      if (stat === undefined) points.set(path, i === parts.length && mount.type === 'bind' ? 'file' : 'directory');
      else if (!stat.isDirectory()) break;
    }
  }
  return [...points].map(([path, kind]) => ({ path, kind }));
}

/** Adds empty files and directories to an unmounted ext4 image with debugfs (which reports errors only in its output). */
/**
 * How e2fsprogs' tools name a filesystem that starts `at` bytes into `image`: the io option after a `?`, which is why
 * such an image's own name may not hold one.
 */
export function ext4At(image: string, at: number): string {
  if (at === 0) return image;
  if (image.includes('?')) throw new Error(`${image}: e2fsprogs cannot name a filesystem inside a file whose name holds "?"`);
  return `${image}?offset=${at}`;
}

async function addMountPoints(image: string, at: number, points: readonly MountPoint[]): Promise<void> {
  const empty = `${image}.empty`;
  const commands = `${image}.debugfs`;
  try {
    await writeFile(empty, '', { mode: 0o644 });
    await writeFile(commands, points.map((p) => (p.kind === 'directory' ? `mkdir ${p.path}` : `write ${empty} ${p.path}`)).join('\n'));
    const { stderr } = await execFileAsync('debugfs', ['-w', '-f', commands, ext4At(image, at)]);
    const failures = stderr.split('\n').filter((line) => line !== '' && !line.startsWith('debugfs') && !line.startsWith('Allocated inode'));
    if (failures.length > 0) throw new Error(`debugfs: ${failures.join('; ')}`);
  } finally {
    await rm(empty, { force: true });
    await rm(commands, { force: true });
  }
}

/**
 * Builds `output` as ext4 holding `rootfs` (and `mountPoints`). The file appears only complete (built aside, then
 * renamed).
 */
export async function buildExt4Image(
  rootfs: string,
  summary: TreeSize,
  output: string,
  writable: boolean,
  freeMiB: number,
  mountPoints: readonly MountPoint[] = [],
  /** Where in `output` the filesystem starts (what comes before stays a hole): room for a LUKS header. */
  at = 0,
): Promise<void> {
  const partial = `${output}.${process.pid}.partial`;
  const size = imageSizeBytes(summary, freeMiB);
  const args = [
    '-q',
    '-F',
    '-t',
    'ext4',
    '-b',
    String(BLOCK),
    '-d',
    rootfs,
    '-L',
    'rootfs',
    '-N',
    String(summary.entries + (writable ? 65536 : 256)),
    // A read-only disk is never written, so a journal would only cost space; a writable one needs it to survive a
    // VM that is torn down mid-write.
    '-O',
    writable ? 'has_journal' : '^has_journal',
    '-E',
    `nodiscard,lazy_itable_init=0${at > 0 ? `,offset=${at}` : ''}`,
    '-m',
    '0',
    partial,
    `${size / 1024}k`,
  ];
  try {
    // The image holds the workload's files (and later what it writes): readable by its owner only, from the start.
    await writeFile(partial, '', { mode: 0o600 });
    await execFileAsync('mke2fs', args, { env: { ...process.env, MKE2FS_CONFIG: '/dev/null' } });
    if (mountPoints.length > 0) await addMountPoints(partial, at, mountPoints);
  } catch (e) {
    await rm(partial, { force: true });
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new Error('mke2fs or debugfs not found: root disks are built with Debian package e2fsprogs');
    throw new Error(`building the root disk from ${rootfs} failed: ${(err.stderr ?? err.message).trim()}`);
  }
  await rename(partial, output);
}

/**
 * A lock file holding the owner's pid, so two runs of one read-write bundle never mount its disk at once.
 * A lock whose process is gone is taken over.
 */
export async function lockFile(path: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => rm(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = Number(readFileSync(path, 'utf8'));
      if (Number.isInteger(owner) && owner > 0 && processAlive(owner)) {
        throw new Error(`${path}: the disk is in use by ts-vmm process ${owner}`);
      }
      await rm(path, { force: true });
    }
  }
  throw new Error(`${path}: could not take the lock`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Finds or builds the root disk for a bundle. */
export async function prepareRootDisk(config: BundleConfig, options: RootDiskOptions): Promise<RootDisk> {
  const log = options.log ?? (() => undefined);
  const summary = treeSummary(config.rootfs, options.cacheDir, (options.now ?? Date.now)());
  if (config.readonlyRoot) {
    const dir = join(options.cacheDir, 'rootfs');
    const mountPoints = missingMountPoints(config);
    const key =
      mountPoints.length === 0
        ? summary.hash
        : createHash('sha256')
            .update(`${summary.hash}\n${JSON.stringify(mountPoints)}`)
            .digest('hex');
    const path = join(dir, `${key.slice(0, 32)}.ext4`);
    if (existsSync(path)) return { path, readonly: true, built: false };
    await mkdir(dir, { recursive: true, mode: 0o700 });
    log(`building the root disk from ${config.rootfs} (${formatMiB(summary.bytes)}, ${summary.entries} entries)`);
    await buildExt4Image(config.rootfs, summary, path, false, 0, mountPoints);
    return { path, readonly: true, built: true };
  }
  const dir = bundleStateDir(config.bundle);
  const path = join(dir, 'rootfs.ext4');
  const sourceRecord = join(dir, 'rootfs.source');
  if (existsSync(path)) {
    const madeFrom = existsSync(sourceRecord) ? (await readFile(sourceRecord, 'utf8')).trim() : '';
    const disk: RootDisk = { path, readonly: false, built: false };
    if (madeFrom !== summary.hash) {
      disk.staleWarning =
        `${config.rootfs} changed since ${path} was made from it; the disk keeps the workload's ` +
        'earlier writes and is used as it is (delete it to start again from the rootfs)';
    }
    return disk;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const freeMiB = options.writableFreeMiB ?? DEFAULT_WRITABLE_FREE_MIB;
  log(`building the writable root disk from ${config.rootfs} (${formatMiB(summary.bytes)}, ${summary.entries} entries)`);
  await writeFile(join(dir, 'bundle'), `${config.bundle}\n`);
  await buildExt4Image(config.rootfs, summary, path, true, freeMiB);
  await writeFile(sourceRecord, `${summary.hash}\n`);
  return { path, readonly: false, built: true };
}

function formatMiB(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}
