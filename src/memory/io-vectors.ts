// A reusable `struct iovec` array pointing straight into guest RAM: a scatter/gather transfer of a
// request with hundreds of segments becomes one preadv/pwritev, with no typed-array view per segment.
import { cStruct, offsetOf } from '../sys/abi.js';

export const iovec = cStruct('struct iovec', 'sys/uio.h', { iov_base: 'uint64', iov_len: 'uint64' });
const BASE = offsetOf(iovec, 'iov_base') / 4;
const LENGTH = offsetOf(iovec, 'iov_len') / 4;
const WORDS = iovec.size / 4;
const U32 = 0x1_0000_0000;

/** The kernel's limit on vectors per call (UIO_MAXIOV). */
export const IOV_MAX = 1024;

export class IoVectors {
  /** The array as the kernel reads it. */
  readonly bytes: Uint8Array;
  private readonly words: Uint32Array;
  /** Vectors in use, from `first`. */
  private first = 0;
  private end = 0;
  private total = 0;

  constructor(readonly capacity = IOV_MAX) {
    this.words = new Uint32Array(capacity * WORDS);
    this.bytes = new Uint8Array(this.words.buffer);
  }

  /** Bytes still to transfer. */
  get length(): number {
    return this.total;
  }

  /** Vectors still to transfer, and where the first of them starts in `bytes`. */
  get count(): number {
    return this.end - this.first;
  }

  get byteOffset(): number {
    return this.first * iovec.size;
  }

  clear(): void {
    this.first = this.end = this.total = 0;
  }

  /** Appends [hostAddress, +length); false when the array is full. Host addresses fit in 53 bits. */
  push(hostAddress: number, length: number): boolean {
    if (this.end === this.capacity) return false;
    this.set(this.end++, hostAddress, length);
    this.total += length;
    return true;
  }

  /** Drops the first `n` bytes: what a short preadv/pwritev already moved. */
  advance(n: number): void {
    let left = n;
    while (left > 0 && this.first < this.end) {
      const at = this.first * WORDS;
      const length = this.words[at + LENGTH]! + this.words[at + LENGTH + 1]! * U32;
      if (left < length) {
        this.set(this.first, this.words[at + BASE]! + this.words[at + BASE + 1]! * U32 + left, length - left);
        break;
      }
      left -= length;
      this.first++;
    }
    this.total -= n;
  }

  private set(index: number, base: number, length: number): void {
    const at = index * WORDS;
    this.words[at + BASE] = base % U32;
    this.words[at + BASE + 1] = Math.floor(base / U32);
    this.words[at + LENGTH] = length % U32;
    this.words[at + LENGTH + 1] = Math.floor(length / U32);
  }
}
