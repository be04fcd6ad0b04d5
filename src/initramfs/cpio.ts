// A writer for the cpio "newc" format (the SVR4 ASCII format, magic 070701), the only archive format
// the Linux kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
// Entries stream into a Node Writable with backpressure, so a 150 MB initramfs never sits in memory twice.
import { once } from 'node:events';
import type { Writable } from 'node:stream';

const MAGIC = '070701';
const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export interface EntryOptions {
  /** Permission bits (and setuid/setgid/sticky), without the file type. */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch; 0 by default so that archives are reproducible. */
  mtime?: number;
}

/** Thrown for an entry the newc format cannot hold or that would unpack somewhere unexpected. */
export class CpioError extends Error {
  override readonly name = 'CpioError';
}

function hex8(value: number, field: string): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new CpioError(`cpio ${field} ${value} does not fit the newc header's 32-bit field`);
  }
  return value.toString(16).padStart(8, '0');
}

const padTo4 = (n: number): number => (4 - (n % 4)) % 4;

/**
 * Archive paths are relative (`bin/busybox`, never `/bin/busybox`), like the ones `find . | cpio -o`
 * produces; `..` components are refused so an archive never reaches outside the directory it unpacks in.
 */
export function normalizeArchivePath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0) throw new CpioError(`cpio entry path '${path}' names no file`);
  if (parts.includes('..')) throw new CpioError(`cpio entry path '${path}' contains '..'`);
  return parts.join('/');
}

/** Bytes from an entry's header to its data: the header, the NUL-terminated name, padding to 4. */
export function headerLength(name: string): number {
  const unpadded = HEADER_SIZE + Buffer.byteLength(name, 'utf8') + 1;
  return unpadded + padTo4(unpadded);
}

export class CpioWriter {
  private nextInode = 1;
  private finished = false;
  private readonly names = new Set<string>();

  constructor(private readonly out: Writable) {}

  async directory(path: string, options: EntryOptions = {}): Promise<void> {
    await this.entry(path, S_IFDIR, options.mode ?? 0o755, options, 2, new Uint8Array(0));
  }

  async file(path: string, data: Uint8Array, options: EntryOptions = {}): Promise<void> {
    await this.entry(path, S_IFREG, options.mode ?? 0o644, options, 1, data);
  }

  async symlink(path: string, target: string, options: EntryOptions = {}): Promise<void> {
    if (target === '') throw new CpioError(`symlink ${path} has an empty target`);
    await this.entry(path, S_IFLNK, options.mode ?? 0o777, options, 1, Buffer.from(target, 'utf8'));
  }

  /** A character or block device node, e.g. `dev/console` as char 5:1. */
  async device(path: string, kind: 'char' | 'block', major: number, minor: number, options: EntryOptions = {}): Promise<void> {
    const type = kind === 'char' ? S_IFCHR : S_IFBLK;
    await this.entry(path, type, options.mode ?? 0o600, options, 1, new Uint8Array(0), { major, minor });
  }

  async fifo(path: string, options: EntryOptions = {}): Promise<void> {
    await this.entry(path, S_IFIFO, options.mode ?? 0o644, options, 1, new Uint8Array(0));
  }

  /** Writes the trailer entry; the archive is complete once `out` has been ended and flushed. */
  async finish(): Promise<void> {
    await this.header(TRAILER, 0, 0, {}, 1, 0, { major: 0, minor: 0 });
    this.finished = true;
  }

  private async entry(
    path: string,
    type: number,
    permissions: number,
    options: EntryOptions,
    nlink: number,
    data: Uint8Array,
    rdev = { major: 0, minor: 0 },
  ): Promise<void> {
    if (permissions & ~0o7777) throw new CpioError(`mode ${permissions.toString(8)} of ${path} has bits beyond the permissions`);
    const name = normalizeArchivePath(path);
    if (this.names.has(name)) throw new CpioError(`cpio entry ${name} added twice`);
    this.names.add(name);
    await this.header(name, type | permissions, data.length, options, nlink, this.nextInode++, rdev);
    if (data.length > 0) {
      await this.push(data);
      await this.push(new Uint8Array(padTo4(data.length)));
    }
  }

  private async header(
    name: string,
    mode: number,
    fileSize: number,
    options: EntryOptions,
    nlink: number,
    inode: number,
    rdev: { major: number; minor: number },
  ): Promise<void> {
    if (this.finished) throw new CpioError('cpio archive already finished');
    const nameBytes = Buffer.from(`${name}\0`, 'utf8');
    const fields = [
      MAGIC,
      hex8(inode, 'inode'),
      hex8(mode, 'mode'),
      hex8(options.uid ?? 0, 'uid'),
      hex8(options.gid ?? 0, 'gid'),
      hex8(nlink, 'nlink'),
      hex8(options.mtime ?? 0, 'mtime'),
      hex8(fileSize, `size of ${name}`),
      hex8(0, 'devmajor'),
      hex8(0, 'devminor'),
      hex8(rdev.major, 'rdevmajor'),
      hex8(rdev.minor, 'rdevminor'),
      hex8(nameBytes.length, 'namesize'),
      hex8(0, 'check'),
    ].join('');
    const header = Buffer.alloc(headerLength(name));
    header.write(fields, 0, 'latin1');
    nameBytes.copy(header, HEADER_SIZE);
    await this.push(header);
  }

  private async push(chunk: Uint8Array): Promise<void> {
    if (chunk.length === 0) return;
    if (!this.out.write(chunk)) await once(this.out, 'drain');
  }
}
