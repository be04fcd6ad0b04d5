// A virtio driver written for the tests: it programs a virtio-mmio transport through its BusDevice
// interface, the way Linux's virtio_mmio does, and lays out split rings in guest memory by hand.
import type { BusDevice } from '../../src/devices/bus.js';
import type { Interrupt } from '../../src/devices/interrupt.js';
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_INTERRUPT_ACK,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
  VIRTIO_MMIO_QUEUE_AVAIL_LOW,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_QUEUE_USED_HIGH,
  VIRTIO_MMIO_QUEUE_USED_LOW,
  VIRTIO_MMIO_STATUS,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
} from '../../src/virtio/abi.js';
import { ringBytes } from '../../src/virtio/virtqueue.js';

export class InterruptCounter implements Interrupt {
  count = 0;
  trigger(): void {
    this.count++;
  }
}

/** Bump allocator over one guest RAM region. */
export class GuestHeap {
  constructor(
    readonly memory: GuestMemory,
    private next: number,
    readonly end: number,
  ) {}

  alloc(size: number, align = 16): number {
    const at = Math.ceil(this.next / align) * align;
    if (at + size > this.end) throw new Error('test guest heap exhausted');
    this.next = at + size;
    return at;
  }
}

export interface Buffer {
  address: number;
  length: number;
  writable?: boolean;
}

export class DriverQueue {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  private nextDesc = 0;
  availIdx = 0;
  lastUsed = 0;

  constructor(
    readonly driver: TestDriver,
    readonly index: number,
    readonly size: number,
    heap: GuestHeap,
  ) {
    const bytes = ringBytes(size);
    this.desc = heap.alloc(bytes.desc, 16);
    this.avail = heap.alloc(bytes.avail, 2);
    this.used = heap.alloc(bytes.used, 4);
  }

  get memory(): GuestMemory {
    return this.driver.memory;
  }

  writeDesc(i: number, address: number, length: number, flags: number, next: number, table = this.desc): void {
    const at = table + 16 * i;
    this.memory.writeU64(at, BigInt(address));
    this.memory.writeU32(at + 8, length);
    this.memory.writeU16(at + 12, flags);
    this.memory.writeU16(at + 14, next);
  }

  /** Lays out `buffers` as a direct chain in free descriptors; returns the head. */
  chain(buffers: Buffer[]): number {
    const ids = buffers.map(() => {
      const i = this.nextDesc;
      this.nextDesc = (this.nextDesc + 1) % this.size;
      return i;
    });
    for (const [k, b] of buffers.entries()) {
      this.writeDesc(ids[k]!, b.address, b.length, (b.writable ? VRING_DESC_F_WRITE : 0) | (k + 1 < buffers.length ? VRING_DESC_F_NEXT : 0), ids[k + 1] ?? 0);
    }
    return ids[0]!;
  }

  /** Lays out `buffers` in an indirect table at `table`; returns the head of the one-descriptor chain. */
  indirectChain(buffers: Buffer[], table: number): number {
    for (const [k, b] of buffers.entries()) {
      this.writeDesc(k, b.address, b.length, (b.writable ? VRING_DESC_F_WRITE : 0) | (k + 1 < buffers.length ? VRING_DESC_F_NEXT : 0), k + 1, table);
    }
    const head = this.nextDesc;
    this.nextDesc = (this.nextDesc + 1) % this.size;
    this.writeDesc(head, table, 16 * buffers.length, VRING_DESC_F_INDIRECT, 0);
    return head;
  }

  /** Publishes heads in the available ring (without notifying). */
  offer(...heads: number[]): void {
    for (const h of heads) {
      this.memory.writeU16(this.avail + 4 + 2 * (this.availIdx % this.size), h);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    this.memory.writeU16(this.avail + 2, this.availIdx);
  }

  notify(): void {
    this.driver.write(VIRTIO_MMIO_QUEUE_NOTIFY, this.index);
  }

  submit(...heads: number[]): void {
    this.offer(...heads);
    this.notify();
  }

  usedIdx(): number {
    return this.memory.readU16(this.used + 2);
  }

  usedFlags(): number {
    return this.memory.readU16(this.used);
  }

  /** New used elements since the last call. */
  takeUsed(): { id: number; len: number }[] {
    const out = [];
    const idx = this.usedIdx();
    for (; this.lastUsed !== idx; this.lastUsed = (this.lastUsed + 1) & 0xffff) {
      const at = this.used + 4 + 8 * (this.lastUsed % this.size);
      out.push({ id: this.memory.readU32(at), len: this.memory.readU32(at + 4) });
    }
    return out;
  }

  setAvailFlags(flags: number): void {
    this.memory.writeU16(this.avail, flags);
  }

  setUsedEvent(value: number): void {
    this.memory.writeU16(this.avail + 4 + 2 * this.size, value);
  }

  availEvent(): number {
    return this.memory.readU16(this.used + 4 + 8 * this.size);
  }
}

export class TestDriver {
  readonly heap: GuestHeap;

  constructor(
    readonly transport: BusDevice,
    readonly memory: GuestMemory,
    heapStart = 0x1000,
  ) {
    const r = memory.regions[0]!;
    this.heap = new GuestHeap(memory, Math.max(heapStart, r.guestAddress), r.end);
  }

  read(offset: number): number {
    const b = new Uint8Array(4);
    this.transport.read(offset, b);
    return new DataView(b.buffer).getUint32(0, true);
  }

  write(offset: number, value: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value >>> 0, true);
    this.transport.write(offset, b);
  }

  readConfig(offset: number, size: 1 | 2 | 4 | 8): bigint {
    const b = new Uint8Array(size);
    this.transport.read(VIRTIO_MMIO_CONFIG + offset, b);
    let v = 0n;
    for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    return v;
  }

  deviceFeatures(): bigint {
    this.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    const lo = this.read(VIRTIO_MMIO_DEVICE_FEATURES);
    this.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    return (BigInt(this.read(VIRTIO_MMIO_DEVICE_FEATURES)) << 32n) | BigInt(lo);
  }

  status(): number {
    return this.read(VIRTIO_MMIO_STATUS);
  }

  setStatus(value: number): void {
    this.write(VIRTIO_MMIO_STATUS, value);
  }

  /** ACKNOWLEDGE, DRIVER, driver features, FEATURES_OK; returns whether the device accepted them. */
  negotiate(features: bigint): boolean {
    this.setStatus(0);
    this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    this.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    this.write(VIRTIO_MMIO_DRIVER_FEATURES, Number(features & 0xffff_ffffn));
    this.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    this.write(VIRTIO_MMIO_DRIVER_FEATURES, Number(features >> 32n));
    this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    return (this.status() & VIRTIO_CONFIG_S_FEATURES_OK) !== 0;
  }

  /** Programs queue `index` with rings allocated from the heap (or the given layout). */
  queue(index: number, size: number, layout?: { desc: number; avail: number; used: number }): DriverQueue {
    const q = new DriverQueue(this, index, size, this.heap);
    const at = layout ?? q;
    this.write(VIRTIO_MMIO_QUEUE_SEL, index);
    this.write(VIRTIO_MMIO_QUEUE_NUM, size);
    this.write(VIRTIO_MMIO_QUEUE_DESC_LOW, at.desc % 2 ** 32);
    this.write(VIRTIO_MMIO_QUEUE_DESC_HIGH, Math.floor(at.desc / 2 ** 32));
    this.write(VIRTIO_MMIO_QUEUE_AVAIL_LOW, at.avail % 2 ** 32);
    this.write(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, Math.floor(at.avail / 2 ** 32));
    this.write(VIRTIO_MMIO_QUEUE_USED_LOW, at.used % 2 ** 32);
    this.write(VIRTIO_MMIO_QUEUE_USED_HIGH, Math.floor(at.used / 2 ** 32));
    this.write(VIRTIO_MMIO_QUEUE_READY, 1);
    return q;
  }

  driverOk(): void {
    this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
  }

  interruptStatus(): number {
    return this.read(VIRTIO_MMIO_INTERRUPT_STATUS);
  }

  ack(bits: number): void {
    this.write(VIRTIO_MMIO_INTERRUPT_ACK, bits);
  }
}
