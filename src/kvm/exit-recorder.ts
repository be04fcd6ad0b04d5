// What a vCPU thread records about its exits when the VMM is asked to watch (--trace, --stats,
// --timeline): counters per exit reason and per device, time inside KVM_RUN against time outside it,
// a histogram of exits over time, and a ring of the latest events. Everything lives in one
// SharedArrayBuffer written only by the vCPU thread and read by the main thread, so recording costs no
// message and no lock. A VMM that does not watch creates no recorder, and the vCPU loop picks its
// unrecorded body once, before the first KVM_RUN.
import type { VcpuExit } from './types.js';

/** Exit reasons as recorded (an index into the per-reason counters). */
export const EXIT_REASONS = [
  'pio',
  'mmio',
  'hlt',
  'intr',
  'irq-window-open',
  'shutdown',
  'system-event',
  'fail-entry',
  'internal-error',
  'exception',
  'unknown',
] as const;
export type ExitReason = (typeof EXIT_REASONS)[number];
const REASON_INDEX = new Map<string, number>(EXIT_REASONS.map((reason, i) => [reason, i]));

/** A device range the recorder counts accesses to (the buses' ranges, in the worker's view). */
export interface RecordedRange {
  space: 'pio' | 'mmio';
  base: number;
  size: number;
  name: string;
}

/** Which events go into the ring: all exits, or only port I/O and/or MMIO ones. */
export interface RecorderEvents {
  exits: boolean;
  pio: boolean;
  mmio: boolean;
}

export interface ExitRecorderDescriptor {
  buffer: SharedArrayBuffer;
  ringSlots: number;
  /** Wait for the main thread to drain a full ring (a trace file) instead of overwriting its oldest events. */
  lossless: boolean;
  events: RecorderEvents;
  ranges: RecordedRange[];
  /** Width of a histogram bucket in ms, and the clock (epoch ms) bucket 0 starts at. */
  bucketMs: number;
  originMs: number;
}

export const HISTOGRAM_BUCKETS = 2048;

// Header words (Float64): ms in KVM_RUN, ms outside it, first and last exit (epoch ms).
const GUEST_MS = 2;
const VMM_MS = 3;
const FIRST_EXIT = 4;
const LAST_EXIT = 5;
// Header word 6 holds two Int32 counters, modulo 2^32: events published (stored with Atomics after their
// fields, so a reader that loads the count sees the events whole) and events taken (a lossless writer
// sleeps on it).
const COUNTERS_BYTE_OFFSET = 6 * 8;
const PUBLISHED = 0;
const TAKEN = 1;
const HEADER = 8;
// Per device: exits, bytes, first access (epoch ms).
const DEVICE_FIELDS = 3;
// Per event: time (epoch ms), reason, address, size, count, is-write, value low 32 bits, value high 32 bits.
export const EVENT_FIELDS = 8;

/** One recorded exit. `address` is the port or guest-physical address; `value` the data (up to 8 bytes). */
export interface ExitEvent {
  timeMs: number;
  reason: ExitReason;
  address: number;
  size: number;
  count: number;
  isWrite: boolean;
  value: bigint;
}

function layout(ranges: number, ringSlots: number) {
  const counters = HEADER;
  const devices = counters + EXIT_REASONS.length;
  const histogram = devices + ranges * DEVICE_FIELDS;
  const ring = histogram + HISTOGRAM_BUCKETS;
  return { counters, devices, histogram, ring, words: ring + ringSlots * EVENT_FIELDS };
}

export function createRecorderDescriptor(options: Omit<ExitRecorderDescriptor, 'buffer'>): ExitRecorderDescriptor {
  const { words } = layout(options.ranges.length, options.ringSlots);
  const buffer = new SharedArrayBuffer(words * 8);
  const header = new Float64Array(buffer, 0, HEADER);
  header[FIRST_EXIT] = Number.NaN;
  return { ...options, buffer };
}

/** A range with its place in the per-device counters. */
type IndexedRange = { base: number; size: number; index: number };

const now = (): number => performance.timeOrigin + performance.now();

/** The vCPU thread's side. */
export class ExitRecorder {
  private readonly words: Float64Array;
  private readonly counters: Int32Array;
  private readonly at: ReturnType<typeof layout>;
  private written = 0;
  private readonly pio: IndexedRange[];
  private readonly mmio: IndexedRange[];
  private left = now();

  constructor(private readonly descriptor: ExitRecorderDescriptor) {
    this.words = new Float64Array(descriptor.buffer);
    this.counters = new Int32Array(descriptor.buffer, COUNTERS_BYTE_OFFSET, 2);
    this.at = layout(descriptor.ranges.length, descriptor.ringSlots);
    const indexed = descriptor.ranges.map(({ space, base, size }, index) => ({ space, base, size, index }));
    this.pio = indexed.filter((r) => r.space === 'pio');
    this.mmio = indexed.filter((r) => r.space === 'mmio');
  }

  /** Runs the guest once, counting the time inside KVM_RUN as the guest's and the time since the last exit as the VMM's. */
  run(enter: () => VcpuExit): { exit: VcpuExit; timeMs: number } {
    const entered = now();
    const exit = enter();
    const left = now();
    const w = this.words;
    w[VMM_MS]! += entered - this.left;
    w[GUEST_MS]! += left - entered;
    this.left = left;
    return { exit, timeMs: left };
  }

  /** Counts an exit once it is handled (a read's value is then known). */
  record(exit: VcpuExit, timeMs: number): void {
    const w = this.words;
    if (Number.isNaN(w[FIRST_EXIT])) w[FIRST_EXIT] = timeMs;
    w[LAST_EXIT] = timeMs;
    const reason = exit.kind === 'io' ? 'pio' : exit.kind;
    const reasonIndex = REASON_INDEX.get(reason) ?? REASON_INDEX.get('unknown')!;
    w[this.at.counters + reasonIndex]! += 1;
    const bucket = Math.min(HISTOGRAM_BUCKETS - 1, Math.max(0, Math.floor((timeMs - this.descriptor.originMs) / this.descriptor.bucketMs)));
    w[this.at.histogram + bucket]! += 1;
    let address = 0;
    let size = 0;
    let count = 1;
    let isWrite = false;
    let data: Uint8Array | undefined;
    if (exit.kind === 'io') {
      ({ port: address, size, count, data } = exit);
      isWrite = exit.direction === 'out';
      this.countDevice(this.pio, address, size * count, timeMs);
    } else if (exit.kind === 'mmio') {
      address = exit.address;
      size = exit.data.length;
      isWrite = exit.isWrite;
      data = exit.data;
      this.countDevice(this.mmio, address, size, timeMs);
    }
    const events = this.descriptor.events;
    if (exit.kind === 'io' ? events.pio || events.exits : exit.kind === 'mmio' ? events.mmio || events.exits : events.exits) {
      this.push(timeMs, reasonIndex, address, size, count, isWrite, data);
    }
  }

  private countDevice(ranges: IndexedRange[], address: number, bytes: number, timeMs: number): void {
    const range = ranges.find((r) => address >= r.base && address < r.base + r.size);
    if (range === undefined) return;
    const at = this.at.devices + range.index * DEVICE_FIELDS;
    const w = this.words;
    w[at]! += 1;
    w[at + 1]! += bytes;
    if (w[at + 2] === 0) w[at + 2] = timeMs;
  }

  private push(timeMs: number, reason: number, address: number, size: number, count: number, isWrite: boolean, data: Uint8Array | undefined): void {
    const w = this.words;
    const slots = this.descriptor.ringSlots;
    const written = this.written;
    if (this.descriptor.lossless) {
      // A trace file loses nothing: the guest waits while the main thread writes out a full ring.
      for (let taken = Atomics.load(this.counters, TAKEN); ((written - taken) | 0) >= slots; taken = Atomics.load(this.counters, TAKEN)) {
        Atomics.wait(this.counters, TAKEN, taken, 10);
      }
    }
    const at = this.at.ring + (written % slots) * EVENT_FIELDS;
    let low = 0;
    let high = 0;
    if (data !== undefined) {
      const bytes = Math.min(size, 8);
      for (let i = Math.min(bytes, 4) - 1; i >= 0; i--) low = low * 256 + data[i]!;
      for (let i = bytes - 1; i >= 4; i--) high = high * 256 + data[i]!;
    }
    w[at] = timeMs;
    w[at + 1] = reason;
    w[at + 2] = address;
    w[at + 3] = size;
    w[at + 4] = count;
    w[at + 5] = isWrite ? 1 : 0;
    w[at + 6] = low;
    w[at + 7] = high;
    this.written = written + 1;
    Atomics.store(this.counters, PUBLISHED, this.written | 0);
  }
}

/** What a vCPU's recorder holds, as the main thread reads it. */
export interface VcpuRecord {
  exitsByReason: Partial<Record<ExitReason, number>>;
  devices: { name: string; space: 'pio' | 'mmio'; exits: number; bytes: number; firstAccessMs?: number }[];
  guestMs: number;
  vmmMs: number;
  firstExitMs?: number;
  lastExitMs?: number;
  histogram: number[];
  bucketMs: number;
  originMs: number;
  /** Events the ring no longer holds (overwritten before they were read). */
  eventsLost: number;
}

/** The main thread's side: reads counters and takes events from the ring. */
export class ExitRecordReader {
  private readonly words: Float64Array;
  private readonly counters: Int32Array;
  private readonly at: ReturnType<typeof layout>;
  private taken = 0;
  private lost = 0;

  constructor(private readonly descriptor: ExitRecorderDescriptor) {
    this.words = new Float64Array(descriptor.buffer);
    this.counters = new Int32Array(descriptor.buffer, COUNTERS_BYTE_OFFSET, 2);
    this.at = layout(descriptor.ranges.length, descriptor.ringSlots);
  }

  /** Takes every event not yet taken, oldest first (of those the ring still holds). */
  take(): ExitEvent[] {
    const w = this.words;
    // Fewer than 2^31 events between two takes: the difference of the 32-bit counters is exact.
    const written = this.taken + ((Atomics.load(this.counters, PUBLISHED) - this.taken) | 0);
    const slots = this.descriptor.ringSlots;
    let taken = this.taken;
    if (written - taken > slots) {
      this.lost += written - taken - slots;
      taken = written - slots;
    }
    const events: ExitEvent[] = [];
    for (let i = taken; i < written; i++) {
      const at = this.at.ring + (i % slots) * EVENT_FIELDS;
      events.push({
        timeMs: w[at]!,
        reason: EXIT_REASONS[w[at + 1]!] ?? 'unknown',
        address: w[at + 2]!,
        size: w[at + 3]!,
        count: w[at + 4]!,
        isWrite: w[at + 5] === 1,
        value: (BigInt(w[at + 7]!) << 32n) | BigInt(w[at + 6]!),
      });
    }
    this.taken = written;
    Atomics.store(this.counters, TAKEN, written | 0);
    Atomics.notify(this.counters, TAKEN);
    return events;
  }

  snapshot(): VcpuRecord {
    const w = this.words;
    const exitsByReason: Partial<Record<ExitReason, number>> = {};
    EXIT_REASONS.forEach((reason, i) => {
      const n = w[this.at.counters + i]!;
      if (n > 0) exitsByReason[reason] = n;
    });
    const devices = this.descriptor.ranges.map((range, i) => {
      const at = this.at.devices + i * DEVICE_FIELDS;
      const first = w[at + 2]!;
      return { name: range.name, space: range.space, exits: w[at]!, bytes: w[at + 1]!, ...(first > 0 ? { firstAccessMs: first } : {}) };
    });
    const first = w[FIRST_EXIT]!;
    return {
      exitsByReason,
      devices,
      guestMs: w[GUEST_MS]!,
      vmmMs: w[VMM_MS]!,
      ...(Number.isNaN(first) ? {} : { firstExitMs: first, lastExitMs: w[LAST_EXIT]! }),
      histogram: Array.from(w.subarray(this.at.histogram, this.at.histogram + HISTOGRAM_BUCKETS)),
      bucketMs: this.descriptor.bucketMs,
      originMs: this.descriptor.originMs,
      eventsLost: this.lost,
    };
  }
}
