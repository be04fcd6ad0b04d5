// One line per traced exit: when (ms since the VMM started), which vCPU, why, where, how much, what
// value, and which device answered. Columns are fixed so a trace reads as a table and greps well.
import type { ExitEvent, RecordedRange } from '../kvm/exit-recorder.js';

/** What `--trace` takes: a comma list of these. */
export const TRACE_CATEGORIES = ['exits', 'pio', 'mmio', 'virtio'] as const;
export type TraceCategory = (typeof TRACE_CATEGORIES)[number];

const hex = (n: number | bigint, width: number) => `0x${n.toString(16).padStart(width, '0')}`;

/** The range that answered an access: vCPU-local ranges are listed first, as they are consulted first. */
export function deviceAt(ranges: readonly RecordedRange[], space: 'pio' | 'mmio', address: number): string {
  return ranges.find((r) => r.space === space && address >= r.base && address < r.base + r.size)?.name ?? '(nothing: floating bus)';
}

export function isVirtioDevice(name: string): boolean {
  return name.startsWith('virtio');
}

/** Whether an event belongs to one of the traced categories. */
export function traced(event: ExitEvent, device: string | undefined, categories: ReadonlySet<TraceCategory>): boolean {
  if (categories.has('exits')) return true;
  if (event.reason === 'pio') return categories.has('pio');
  if (event.reason !== 'mmio') return false;
  return categories.has('mmio') || (categories.has('virtio') && device !== undefined && isVirtioDevice(device));
}

export function formatTraceLine(event: ExitEvent, vcpu: number, originMs: number, ranges: readonly RecordedRange[]): string {
  const time = `${(event.timeMs - originMs).toFixed(3).padStart(10)}ms`;
  const head = `${time} vcpu${vcpu} ${event.reason.padEnd(15)}`;
  if (event.reason !== 'pio' && event.reason !== 'mmio') return head;
  const space = event.reason;
  const address = space === 'pio' ? hex(event.address, 4) : hex(event.address, 8);
  const direction = event.isWrite ? 'write' : 'read ';
  const size = event.count > 1 ? `${event.size}x${event.count}` : `${event.size}`;
  return `${head} ${direction} ${address} size ${size} value ${hex(event.value, event.size * 2)} ${deviceAt(ranges, space, event.address)}`;
}

/** Parses `--trace`'s comma list; throws one line naming the unknown word. */
export function parseTraceCategories(value: string): TraceCategory[] {
  const words = value.split(',').map((w) => w.trim());
  for (const word of words) {
    if (!(TRACE_CATEGORIES as readonly string[]).includes(word))
      throw new Error(`--trace ${value}: unknown category ${JSON.stringify(word)} (one or more of ${TRACE_CATEGORIES.join(',')})`);
  }
  return [...new Set(words as TraceCategory[])];
}
