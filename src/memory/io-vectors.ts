// A reusable `struct iovec` array pointing straight into guest RAM: a scatter/gather transfer of a
// request with hundreds of segments becomes one preadv/pwritev, with no typed-array view per segment.
import { offsetOf } from '../sys/abi.js';
import { iovec } from '../sys/iovec.js';
import { readU64 } from './u64.js';

export { iovec };
const BASE = offsetOf(iovec, 'iov_base');
const LENGTH = offsetOf(iovec, 'iov_len');
const U32 = 0x1_0000_0000;

/** The kernel's limit on vectors per call (UIO_MAXIOV). */
export const IOV_MAX = 1024;

export class IoVectors {
  /** The array as the kernel reads it. */
  readonly bytes: Uint8Array;
  private readonly view: DataView;
  /** Vectors in use, from `first`. */
  private first = 0;
  private end = 0;
  private total = 0;

  constructor(readonly capacity = IOV_MAX) {
    this.bytes = new Uint8Array(capacity * iovec.size);
    this.view = new DataView(this.bytes.buffer);
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
      // Host addresses and lengths this array was given: all below 2^53.
      const at = this.first * iovec.size;
      const length = readU64(this.view, at + LENGTH)!;
      if (left < length) {
        this.set(this.first, readU64(this.view, at + BASE)! + left, length - left);
        break;
      }
      left -= length;
      this.first++;
    }
    this.total -= n;
  }

  private set(index: number, base: number, length: number): void {
    const at = index * iovec.size;
    this.view.setUint32(at + BASE, base % U32, true);
    this.view.setUint32(at + BASE + 4, Math.floor(base / U32), true);
    this.view.setUint32(at + LENGTH, length % U32, true);
    this.view.setUint32(at + LENGTH + 4, Math.floor(length / U32), true);
  }
}
