// The device side of a split virtqueue (virtio 1.2 §2.7). The rings live in guest RAM and are written
// concurrently by a hostile driver, so every index, address and length read from them is validated,
// and a violation raises VirtqueueError (the transport then marks the device DEVICE_NEEDS_RESET).
//
// Ordering: the available and used indexes are read and written with Atomics (sequentially consistent,
// a full fence on x86), which gives the barriers of §2.7.7/§2.7.10: ring entries are read only after
// the index that publishes them, used entries are written before the index that publishes them, and
// the used-index store is ordered before the used_event load that decides whether to interrupt.
import type { GuestMemory } from '../memory/guest-memory.js';
import { readU64 } from '../memory/u64.js';
import {
  DESC_ADDR,
  DESC_FLAGS,
  DESC_LEN,
  DESC_NEXT,
  DESC_SIZE,
  USED_ELEM_SIZE,
  VRING_AVAIL_ALIGN_SIZE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_ALIGN_SIZE,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_USED_ALIGN_SIZE,
  VRING_USED_F_NO_NOTIFY,
} from './abi.js';
import { DescriptorChain, type Segment } from './descriptor-chain.js';

export class VirtqueueError extends Error {
  override readonly name = 'VirtqueueError';
}

/** The largest queue size the split ring format allows (§2.7: at most 32768). */
export const MAX_QUEUE_SIZE = 32768;
const U32 = 0x1_0000_0000;

export interface VirtqueueLayout {
  readonly size: number;
  readonly descTable: number;
  readonly availRing: number;
  readonly usedRing: number;
}

export interface VirtqueueFeatures {
  readonly eventIdx: boolean;
  readonly indirect: boolean;
}

/** Bytes each ring occupies for a queue of `size` entries (§2.7, with the event-index words). */
export const ringBytes = (size: number) => ({
  desc: DESC_SIZE * size,
  avail: 6 + 2 * size,
  used: 6 + USED_ELEM_SIZE * size,
});

export class Virtqueue {
  readonly size: number;
  private readonly desc: DataView;
  /** flags, idx, ring[size], used_event */
  private readonly avail: Uint16Array;
  /** flags, idx (then the elements, reached through `usedElems`), avail_event at 2 + 4 * size */
  private readonly used: Uint16Array;
  /** id, len pairs */
  private readonly usedElems: Uint32Array;
  private nextAvail = 0;
  private nextUsed = 0;
  /** Used index when the driver was last considered for an interrupt (for EVENT_IDX). */
  private signalledUsed = 0;

  /** Validates the layout the driver programmed; throws VirtqueueError naming the problem. */
  constructor(
    readonly memory: GuestMemory,
    readonly layout: VirtqueueLayout,
    readonly features: VirtqueueFeatures,
    readonly maxSize: number,
  ) {
    const { size, descTable, availRing, usedRing } = layout;
    if (!Number.isInteger(size) || size < 1 || size > maxSize || (size & (size - 1)) !== 0) {
      throw new VirtqueueError(`queue size ${size} is not a power of 2 between 1 and ${maxSize}`);
    }
    this.size = size;
    const bytes = ringBytes(size);
    const desc = ringView(memory, 'descriptor table', descTable, bytes.desc, VRING_DESC_ALIGN_SIZE);
    this.desc = new DataView(desc.buffer, desc.byteOffset, bytes.desc);
    const avail = ringView(memory, 'available ring', availRing, bytes.avail, VRING_AVAIL_ALIGN_SIZE);
    this.avail = new Uint16Array(avail.buffer, avail.byteOffset, bytes.avail / 2);
    const used = ringView(memory, 'used ring', usedRing, bytes.used, VRING_USED_ALIGN_SIZE, true);
    this.used = new Uint16Array(used.buffer, used.byteOffset, bytes.used / 2);
    this.usedElems = new Uint32Array(used.buffer, used.byteOffset + 4, 2 * size);
  }

  /** Number of chains the driver has made available and the device has not taken yet. */
  pending(): number {
    const idx = Atomics.load(this.avail, 1);
    const n = (idx - this.nextAvail) & 0xffff;
    if (n > this.size) {
      throw new VirtqueueError(`available index moved from ${this.nextAvail} to ${idx}, more than the queue size ${this.size}`);
    }
    return n;
  }

  /** The next available descriptor chain, or null when the ring is empty. */
  pop(): DescriptorChain | null {
    if (this.pending() === 0) return null;
    const head = this.avail[2 + (this.nextAvail % this.size)]!;
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    return this.readChain(head);
  }

  /** Returns a chain to the driver with `written` bytes stored in its writable buffers. */
  addUsed(head: number, written: number): void {
    const slot = this.nextUsed % this.size;
    this.usedElems[2 * slot] = head;
    this.usedElems[2 * slot + 1] = written;
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    Atomics.store(this.used, 1, this.nextUsed);
  }

  /**
   * Whether the driver wants an interrupt for the used entries added since the last call
   * (VRING_AVAIL_F_NO_INTERRUPT, or used_event under EVENT_IDX: vring_need_event of §2.7.10).
   */
  needsInterrupt(): boolean {
    const old = this.signalledUsed;
    const now = this.nextUsed;
    this.signalledUsed = now;
    if (old === now) return false;
    if (!this.features.eventIdx) return (Atomics.load(this.avail, 0) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
    const usedEvent = Atomics.load(this.avail, 2 + this.size);
    return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
  }

  /** Asks the driver not to notify while the device is draining the ring anyway. */
  disableNotification(): void {
    // Under EVENT_IDX a stale avail_event already suppresses notifications past it.
    if (!this.features.eventIdx) Atomics.store(this.used, 0, VRING_USED_F_NO_NOTIFY);
  }

  /**
   * Asks the driver to notify on its next buffer, then re-checks the ring: a buffer made available
   * between the last pop and this call would otherwise never be noticed. Returns true if there is
   * more work (the caller loops again).
   */
  enableNotification(): boolean {
    if (this.features.eventIdx) Atomics.store(this.used, 2 + 4 * this.size, this.nextAvail);
    else Atomics.store(this.used, 0, 0);
    return this.pending() > 0;
  }

  private readChain(head: number): DescriptorChain {
    if (head >= this.size) throw new VirtqueueError(`available ring entry ${head} is beyond the queue size ${this.size}`);
    const readable: Segment[] = [];
    const writable: Segment[] = [];
    let readableLength = 0;
    let writableLength = 0;
    let table = this.desc;
    let tableSize = this.size;
    let index = head;
    let ttl = this.size;
    let indirect = false;
    for (;;) {
      if (ttl-- === 0) throw new VirtqueueError(`descriptor chain from head ${head} is longer than ${indirect ? 'its indirect table' : 'the queue'} (a loop?)`);
      const at = index * DESC_SIZE;
      const address = readU64(table, at + DESC_ADDR);
      if (address === undefined) throw new VirtqueueError(`address of descriptor ${index} is 2^53 or more: not inside guest RAM`);
      const length = table.getUint32(at + DESC_LEN, true);
      const flags = table.getUint16(at + DESC_FLAGS, true);
      const next = table.getUint16(at + DESC_NEXT, true);
      if (flags & VRING_DESC_F_INDIRECT) {
        if (!this.features.indirect) throw new VirtqueueError(`descriptor ${index} is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated`);
        if (indirect) throw new VirtqueueError(`nested indirect descriptor in the chain from head ${head}`);
        if (flags & VRING_DESC_F_NEXT) throw new VirtqueueError(`indirect descriptor ${index} also has NEXT set`);
        if (length === 0 || length % DESC_SIZE !== 0) throw new VirtqueueError(`indirect table length ${length} is not a non-zero multiple of ${DESC_SIZE}`);
        if (length / DESC_SIZE > this.size) throw new VirtqueueError(`indirect table of ${length / DESC_SIZE} descriptors exceeds the queue size ${this.size}`);
        if (!this.memory.contains(address, length))
          throw new VirtqueueError(`indirect table 0x${address.toString(16)}+0x${length.toString(16)} is not inside guest RAM`);
        const bytes = this.memory.slice(address, length);
        table = new DataView(bytes.buffer, bytes.byteOffset, length);
        tableSize = ttl = length / DESC_SIZE;
        index = 0;
        indirect = true;
        continue;
      }
      if (!this.memory.contains(address, length)) {
        throw new VirtqueueError(`buffer 0x${address.toString(16)}+0x${length.toString(16)} of descriptor ${index} is not inside guest RAM`);
      }
      if (flags & VRING_DESC_F_WRITE) {
        if (!this.memory.containsWritable(address, length)) {
          throw new VirtqueueError(
            `device-writable buffer 0x${address.toString(16)}+0x${length.toString(16)} of descriptor ${index} is in read-only guest memory`,
          );
        }
        writableLength += length;
        if (length > 0) writable.push({ address, length });
      } else {
        if (writable.length > 0 || writableLength > 0) throw new VirtqueueError(`device-readable descriptor ${index} follows a device-writable one`);
        readableLength += length;
        if (length > 0) readable.push({ address, length });
      }
      if (readableLength + writableLength >= U32) throw new VirtqueueError(`descriptor chain from head ${head} is 4 GiB or longer`);
      if (!(flags & VRING_DESC_F_NEXT)) break;
      if (next >= tableSize) throw new VirtqueueError(`descriptor ${index} links to ${next}, beyond its table of ${tableSize}`);
      index = next;
    }
    return new DescriptorChain(this.memory, head, readable, writable, readableLength, writableLength);
  }
}

function ringView(memory: GuestMemory, what: string, address: number, length: number, align: number, deviceWrites = false): Uint8Array {
  if (!Number.isSafeInteger(address) || address % align !== 0) {
    throw new VirtqueueError(`${what} at 0x${address.toString(16)} is not ${align}-byte aligned`);
  }
  if (!memory.contains(address, length)) {
    throw new VirtqueueError(`${what} 0x${address.toString(16)}+0x${length.toString(16)} is not inside one guest RAM region`);
  }
  if (deviceWrites && !memory.containsWritable(address, length)) {
    throw new VirtqueueError(`${what} 0x${address.toString(16)}+0x${length.toString(16)} is in read-only guest memory`);
  }
  const view = memory.slice(address, length);
  // Typed-array views need host alignment too; guest RAM regions are page aligned so this holds.
  if (view.byteOffset % align !== 0) throw new VirtqueueError(`${what} at 0x${address.toString(16)} is not host-aligned`);
  return view;
}
