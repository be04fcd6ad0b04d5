// A raw disk image file as the block device sees it: scatter/gather reads and writes straight between
// the file and guest RAM (preadv/pwritev on zero-copy views), fsync, and range deallocation.
import fs from 'node:fs';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocate, preadv, pwritev } from '../sys/sys.js';
import type { IoVectors } from '../memory/io-vectors.js';

export const SECTOR_SIZE = 512;

/** The image file ended before a transfer did (it was cut short under the VMM). */
export class ImageEndError extends Error {
  override readonly name = 'ImageEndError';
}

/**
 * Whether `e` is a failure of the image itself: an errno from a system call on it (Node's fs errors and
 * SysError both carry one) or a file that ended early. The device answers those with an I/O error.
 */
export function isImageIoError(e: unknown): boolean {
  return e instanceof ImageEndError || (e instanceof Error && typeof (e as { errno?: unknown }).errno === 'number');
}

export class RawImage {
  readonly size: number;
  /** Dev/inode of the file: a stable identity for the same image. */
  readonly identity: string;
  private readonly fd: number;
  private zeroes: Uint8Array | undefined;

  /** Opens `path`; refuses a size that is not a whole number of 512-byte sectors rather than rounding it. */
  constructor(
    readonly path: string,
    readonly readOnly: boolean,
  ) {
    this.fd = fs.openSync(path, readOnly ? 'r' : 'r+');
    try {
      const st = fs.fstatSync(this.fd);
      if (!st.isFile() && !st.isBlockDevice()) throw new Error(`disk image ${path} is not a regular file or block device`);
      if (st.size % SECTOR_SIZE !== 0) {
        throw new Error(`disk image ${path} is ${st.size} bytes, not a multiple of ${SECTOR_SIZE}; pad it (truncate -s %${SECTOR_SIZE})`);
      }
      this.size = st.size;
      this.identity = `${st.dev.toString(16)}-${st.ino.toString(16)}`;
    } catch (e) {
      fs.closeSync(this.fd);
      throw e;
    }
  }

  /** Fills `views` from the file at `position`; a read past the end of the file is an error. */
  read(views: Uint8Array[], position: number): void {
    transfer(views, position, (vs, at) => (vs.length === 1 ? fs.readSync(this.fd, vs[0]!, 0, vs[0]!.length, at) : fs.readvSync(this.fd, vs, at)), 'read');
  }

  write(views: Uint8Array[], position: number): void {
    transfer(views, position, (vs, at) => (vs.length === 1 ? fs.writeSync(this.fd, vs[0]!, 0, vs[0]!.length, at) : fs.writevSync(this.fd, vs, at)), 'write');
  }

  /** Fills the guest RAM `vectors` point at from the file at `position`; consumes the vectors. */
  readVectors(vectors: IoVectors, position: number): void {
    transferVectors(vectors, position, (iov, count, at) => preadv(this.fd, iov, count, at, `read ${this.path}`), 'read');
  }

  /** Writes the guest RAM `vectors` point at to the file at `position`; consumes the vectors. */
  writeVectors(vectors: IoVectors, position: number): void {
    transferVectors(vectors, position, (iov, count, at) => pwritev(this.fd, iov, count, at, `write ${this.path}`), 'write');
  }

  flush(): void {
    fs.fsyncSync(this.fd);
  }

  /**
   * Deallocates [offset, offset + length); reads of it return zeroes afterwards. Returns false when
   * `keepGoing` said stop before the range was done (only where zeroes are written instead).
   */
  discard(offset: number, length: number, keepGoing: () => boolean = () => true): boolean {
    return this.allocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length, keepGoing);
  }

  /** Zeroes [offset, offset + length), deallocating it when `unmap` allows; false as for discard. */
  writeZeroes(offset: number, length: number, unmap: boolean, keepGoing: () => boolean = () => true): boolean {
    return this.allocate(unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length, keepGoing);
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  /**
   * fallocate, or writing zeroes where the file system cannot (tmpfs lacks ZERO_RANGE, some lack both):
   * up to 2 GiB a range, so `keepGoing` is asked between megabytes.
   */
  private allocate(mode: number, offset: number, length: number, keepGoing: () => boolean): boolean {
    if (fallocate(this.fd, mode, offset, length, `fallocate ${this.path}`)) return true;
    this.zeroes ??= new Uint8Array(1 << 20);
    for (let done = 0; done < length; ) {
      if (!keepGoing()) return false;
      const n = Math.min(this.zeroes.length, length - done);
      this.write([this.zeroes.subarray(0, n)], offset + done);
      done += n;
    }
    return true;
  }
}

/**
 * Repeats a transfer until every view is done (the kernel may transfer less than asked). A single view
 * goes through pread/pwrite, which Node serves with less overhead than preadv/pwritev.
 */
function transfer(views: Uint8Array[], position: number, io: (views: Uint8Array[], position: number) => number, what: string): void {
  let pending = views;
  let at = position;
  for (;;) {
    let n = io(pending, at);
    if (n === 0 && pending.some((v) => v.length > 0)) throw new ImageEndError(`${what} at offset ${at}: end of file`);
    at += n;
    let i = 0;
    while (i < pending.length && n >= pending[i]!.length) n -= pending[i++]!.length;
    if (i === pending.length) return;
    pending = [pending[i]!.subarray(n), ...pending.slice(i + 1)];
  }
}

function transferVectors(vectors: IoVectors, position: number, io: (iov: Uint8Array, count: number, position: number) => number, what: string): void {
  let at = position;
  while (vectors.length > 0) {
    const n = io(vectors.bytes.subarray(vectors.byteOffset), vectors.count, at);
    if (n === 0) throw new ImageEndError(`${what} at offset ${at}: end of file`);
    vectors.advance(n);
    at += n;
  }
}
