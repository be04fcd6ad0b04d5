// A content hash of a directory tree: every entry's relative path, type, permission bits, owner, and its
// content (file bytes, symlink target, device numbers). Timestamps are left out on purpose, so re-extracting the
// same image or touching a file yields the same hash, and a disk built from the tree can be reused.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Stats } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
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

async function hashFile(hash: Hash, path: string): Promise<void> {
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
}

/** Calls `visit` for every entry, the root first, each directory's entries in name order, parents before children. */
async function walkTree(root: string, visit: (relative: string, path: string, s: Stats) => Promise<void>): Promise<void> {
  const enter = async (relative: string): Promise<void> => {
    const path = relative === '' ? root : join(root, relative);
    const s = await lstat(path);
    await visit(relative, path, s);
    if (!s.isDirectory()) return;
    for (const name of (await readdir(path)).sort()) await enter(relative === '' ? name : `${relative}/${name}`);
  };
  await enter('');
}

/** The tree's size alone, from its entries' metadata: no file is read. */
export async function sizeTree(root: string): Promise<TreeSize> {
  const size = { bytes: 0, entries: 0 };
  await walkTree(root, async (_relative, _path, s) => {
    size.entries++;
    if (s.isFile()) size.bytes += s.size;
  });
  return size;
}

export async function hashTree(root: string): Promise<TreeSummary> {
  const hash = createHash('sha256');
  let bytes = 0;
  let entries = 0;
  await walkTree(root, async (relative, path, s) => {
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
      await hashFile(hash, path);
    } else if (s.isSymbolicLink()) {
      record('l', await readlink(path));
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
