// One request as the driver laid it out: a head index and its buffers in guest RAM, already validated
// by the virtqueue (every segment lies inside guest RAM, device-readable ones before device-writable
// ones). Devices read and write through these helpers so no request ever assumes a particular framing
// of its descriptors (virtio 1.2 §2.6.4).
import type { GuestMemory } from '../memory/guest-memory.js';

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
    return copySegments(this.memory, this.readable, offset, into.length, (view, at) => into.set(view, at));
  }

  /** Copies `data` into the writable bytes from `offset`; returns how many fitted. */
  write(offset: number, data: Uint8Array): number {
    return copySegments(this.memory, this.writable, offset, data.length, (view, at) => view.set(data.subarray(at, at + view.length)));
  }

  /** Zero-copy views of readable bytes [offset, offset + length) (clipped to what exists). */
  readableViews(offset: number, length: number): Uint8Array[] {
    return views(this.memory, this.readable, offset, length);
  }

  /** Zero-copy views of writable bytes [offset, offset + length) (clipped to what exists). */
  writableViews(offset: number, length: number): Uint8Array[] {
    return views(this.memory, this.writable, offset, length);
  }
}

function views(memory: GuestMemory, segments: readonly Segment[], offset: number, length: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  copySegments(memory, segments, offset, length, (view) => { out.push(view); });
  return out;
}

/** Walks `segments` from byte `offset` for up to `length` bytes, handing each piece and its position. */
function copySegments(
  memory: GuestMemory,
  segments: readonly Segment[],
  offset: number,
  length: number,
  each: (view: Uint8Array, position: number) => void,
): number {
  let skip = offset;
  let done = 0;
  for (const s of segments) {
    if (done === length) break;
    if (skip >= s.length) {
      skip -= s.length;
      continue;
    }
    const n = Math.min(s.length - skip, length - done);
    each(memory.slice(s.address + skip, n), done);
    done += n;
    skip = 0;
  }
  return done;
}
