// One request as the driver laid it out: a head index and its buffers in guest RAM, already validated
// by the virtqueue (every segment lies inside guest RAM, device-readable ones before device-writable
// ones). Devices read and write through these helpers so no request ever assumes a particular framing
// of its descriptors (virtio 1.2 §2.6.4).
import type { GuestMemory } from '../memory/guest-memory.js';
import type { IoVectors } from '../memory/io-vectors.js';

export interface Segment {
  readonly address: number;
  readonly length: number;
}

export class DescriptorChain {
  constructor(
    readonly memory: GuestMemory,
    /** Index of the head descriptor: what goes back in the used ring. */
    readonly head: number,
    /** Device-readable buffers, in chain order. */
    readonly readable: readonly Segment[],
    /** Device-writable buffers, in chain order. */
    readonly writable: readonly Segment[],
    readonly readableLength: number,
    readonly writableLength: number,
  ) {}

  /** Copies readable bytes [offset, offset + into.length) into `into`; returns how many there were. */
  read(offset: number, into: Uint8Array): number {
    // Nearly always the bytes lie in one buffer (a request header, a status byte): no walk then.
    const address = this.addressOf(false, offset, into.length);
    if (address !== undefined) {
      into.set(this.memory.slice(address, into.length));
      return into.length;
    }
    return walkSegments(this.readable, offset, into.length, (at, n, position) => into.set(this.memory.slice(at, n), position));
  }

  /** Copies `data` into the writable bytes from `offset`; returns how many fitted. */
  write(offset: number, data: Uint8Array): number {
    const address = this.addressOf(true, offset, data.length);
    if (address !== undefined) {
      this.memory.write(address, data);
      return data.length;
    }
    return walkSegments(this.writable, offset, data.length, (at, n, position) => this.memory.write(at, data.subarray(position, position + n)));
  }

  /**
   * Guest address of readable (or writable) bytes [offset, offset + length) when one buffer holds them
   * all; undefined when they span buffers or lie beyond the chain.
   */
  addressOf(writable: boolean, offset: number, length: number): number | undefined {
    return addressIn(writable ? this.writable : this.readable, offset, length);
  }

  /** Zero-copy views of readable bytes [offset, offset + length) (clipped to what exists). */
  readableViews(offset: number, length: number): Uint8Array[] {
    return views(this.memory, this.readable, offset, length);
  }

  /** Zero-copy views of writable bytes [offset, offset + length) (clipped to what exists). */
  writableViews(offset: number, length: number): Uint8Array[] {
    return views(this.memory, this.writable, offset, length);
  }

  /**
   * Fills `into` with host vectors for readable (or writable) bytes [offset, offset + length), clipped
   * to what exists, on host-mapped guest RAM; false when they need more vectors than it holds.
   */
  ioVectors(writable: boolean, offset: number, length: number, into: IoVectors): boolean {
    // The walk of walkSegments without its callback: this runs for every segment of every transfer.
    into.clear();
    let skip = offset;
    let left = length;
    for (const s of writable ? this.writable : this.readable) {
      if (left === 0) break;
      if (skip >= s.length) {
        skip -= s.length;
        continue;
      }
      const n = Math.min(s.length - skip, left);
      if (!this.memory.pushIoVector(s.address + skip, n, into)) return false;
      left -= n;
      skip = 0;
    }
    return true;
  }
}

function views(memory: GuestMemory, segments: readonly Segment[], offset: number, length: number): Uint8Array[] {
  const address = addressIn(segments, offset, length);
  if (address !== undefined) return [memory.slice(address, length)];
  const out: Uint8Array[] = [];
  walkSegments(segments, offset, length, (address, n) => {
    out.push(memory.slice(address, n));
  });
  return out;
}

function addressIn(segments: readonly Segment[], offset: number, length: number): number | undefined {
  let skip = offset;
  for (const s of segments) {
    if (skip < s.length) return skip + length <= s.length ? s.address + skip : undefined;
    skip -= s.length;
  }
  return undefined;
}

/** Walks `segments` from byte `offset` for up to `length` bytes, handing each piece and its position. */
function walkSegments(segments: readonly Segment[], offset: number, length: number, each: (address: number, length: number, position: number) => void): number {
  let skip = offset;
  let done = 0;
  for (const s of segments) {
    if (done === length) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    const n = Math.min(s.length - skip, length - done);
    each(s.address + skip, n, done);
    done += n;
    skip = 0;
  }
  return done;
}
