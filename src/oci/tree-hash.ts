// A content hash of a directory tree: every entry's relative path, type, permission bits, owner, and its
// content (file bytes, symlink target, device numbers). Timestamps are left out on purpose, so re-extracting the
// same image or touching a file yields the same hash, and a disk built from the tree can be reused.
// The walk makes its system calls synchronously: a tree is thousands of small lstat/readlink calls, and handing
// each to libuv's thread pool and back costs more than the call itself.
import { createHash, type Hash } from 'node:crypto';
import { type BigIntStats, closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs';
import { join } from 'node:path';

/** What a filesystem holding the tree needs room for. */
export interface TreeSize {
  /** Bytes of regular-file content. */
  bytes: number;
  /** Entries of any type, the root included. */
  entries: number;
}

export interface TreeSummary extends TreeSize {
  /** sha256 hex of the tree. */
  hash: string;
}

function hashFile(hash: Hash, path: string, buffer: Buffer): void {
  const fd = openSync(path, 'r');
  try {
    for (let n = readSync(fd, buffer); n > 0; n = readSync(fd, buffer)) hash.update(buffer.subarray(0, n));
  } finally {
    closeSync(fd);
  }
}

/** Calls `visit` for every entry, the root first, each directory's entries in name order, parents before children. */
function walkTree<S extends Stats | BigIntStats>(root: string, visit: (relative: string, path: string, s: S) => void, bigint = false): void {
  const enter = (relative: string): void => {
    const path = relative === '' ? root : join(root, relative);
    const s = lstatSync(path, { bigint }) as S;
    visit(relative, path, s);
    if (!s.isDirectory()) return;
    for (const name of readdirSync(path).sort()) enter(relative === '' ? name : `${relative}/${name}`);
  };
  enter('');
}

/**
 * What the tree's metadata says of it, as git's index does of a work tree: every entry's path, type and mode,
 * owner, size, inode, device and its modification and change times in nanoseconds. Content cannot change without
 * the change time moving (no call sets it back), so an equal fingerprint means equal content, except for a change
 * made within the timestamps' resolution of the last look: `newestChangeMs` lets a caller trust only a settled tree.
 */
export function statFingerprint(root: string): { fingerprint: string; newestChangeMs: number } {
  const hash = createHash('sha256');
  let newest = 0n;
  walkTree<BigIntStats>(
    root,
    (relative, _path, s) => {
      hash.update(`${relative}\0${s.mode}\0${s.uid}\0${s.gid}\0${s.size}\0${s.ino}\0${s.dev}\0${s.rdev}\0${s.mtimeNs}\0${s.ctimeNs}\0`);
      for (const t of [s.mtimeNs, s.ctimeNs]) if (t > newest) newest = t;
    },
    true,
  );
  return { fingerprint: hash.digest('hex'), newestChangeMs: Number(newest / 1_000_000n) };
}

/** The tree's size alone, from its entries' metadata: no file is read. */
export function sizeTree(root: string): TreeSize {
  const size = { bytes: 0, entries: 0 };
  walkTree<Stats>(root, (_relative, _path, s) => {
    size.entries++;
    if (s.isFile()) size.bytes += s.size;
  });
  return size;
}

export function hashTree(root: string): TreeSummary {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(1 << 20);
  let bytes = 0;
  let entries = 0;
  walkTree<Stats>(root, (relative, path, s) => {
    entries++;
    // One record per entry; NUL cannot occur in a path, so records cannot be confused with each other.
    const record = (type: string, extra: string): void => {
      hash.update(`${type}\0${relative}\0${(s.mode & 0o7777).toString(8)}\0${s.uid}\0${s.gid}\0${extra}\0`);
    };
    if (s.isDirectory()) {
      record('d', '');
    } else if (s.isFile()) {
      record('f', String(s.size));
      bytes += s.size;
      hashFile(hash, path, buffer);
    } else if (s.isSymbolicLink()) {
      record('l', readlinkSync(path));
    } else if (s.isCharacterDevice() || s.isBlockDevice()) {
      record(s.isCharacterDevice() ? 'c' : 'b', String(s.rdev));
    } else if (s.isFIFO()) {
      record('p', '');
    } else {
      record('s', ''); // a socket: mke2fs -d skips these, but it still belongs to the tree's identity
    }
  });
  return { hash: hash.digest('hex'), bytes, entries };
}
