// Watching one run (--trace, --stats, --timeline): hands each vCPU an exit recorder, notes the
// milestones only the VMM sees (start-up, vCPUs started, the console's lines), and at the end writes the
// trace (the ring's last events, or a file written as the run goes), the statistics and the timeline.
// A run nobody watches creates none of this: runMachine gets no MachineWatch at all.
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { createRecorderDescriptor, ExitRecordReader, type ExitRecorderDescriptor, type RecordedRange, type VcpuRecord } from '../kvm/exit-recorder.js';
import { deviceAt, formatTraceLine, isVirtioDevice, type TraceCategory, traced } from './exit-trace-format.js';
import { formatRunStats, runStats } from './run-stats.js';
import { renderTimeline, type TimelineMilestone } from './timeline-svg.js';

export interface WatchOptions {
  trace?: readonly TraceCategory[];
  /** Write every traced event here as the run goes; otherwise the last `traceLast` are printed at exit. */
  traceFile?: string;
  traceLast: number;
  /** true: statistics on stderr at exit; a string: as JSON into that file. */
  stats?: boolean | string;
  timeline?: string;
}

/** Width of an exit-density bucket: fine enough for a boot's phases, 2048 of them cover 20 s. */
const BUCKET_MS = 10;
/** A trace file's ring: large enough that the guest rarely waits for the writer. */
const FILE_RING_SLOTS = 16384;
const DRAIN_INTERVAL_MS = 20;
const INIT_LINES = ['Run /init as init process', 'Freeing unused kernel image'];

/** `virtio-blk(/long/path/disk.img)` as `virtio-blk(disk.img)`: a label on a picture names the file, not where it lives. */
const withoutDirectories = (name: string) => name.replace(/\([^()]*\/([^()/]*)\)/, '($1)');

export class MachineWatch {
  private readonly categories: ReadonlySet<TraceCategory>;
  /** The VMM process's start: every time is told from here. */
  readonly originMs = performance.timeOrigin;
  private readonly milestones: TimelineMilestone[] = [];
  private ranges: RecordedRange[] = [];
  private readers: ExitRecordReader[] = [];
  private traceFd: number | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private consoleLine = '';
  private consoleLines = 0;

  constructor(
    private readonly options: WatchOptions,
    private readonly report: (text: string) => void = (text) => process.stderr.write(text),
  ) {
    this.categories = new Set(options.trace ?? []);
    this.mark('VMM start-up');
  }

  /** Notes a milestone now (or at `atEpochMs`), once per label. */
  mark(label: string, atEpochMs = performance.timeOrigin + performance.now()): void {
    if (!this.milestones.some((m) => m.label === label)) this.milestones.push({ label, atMs: atEpochMs - this.originMs });
  }

  /** One recorder per vCPU, counting accesses to `ranges` (vCPU-local ones first: they answer first). */
  recorders(vcpus: number, ranges: readonly RecordedRange[]): ExitRecorderDescriptor[] {
    this.ranges = [...ranges];
    const events = {
      exits: this.categories.has('exits'),
      pio: this.categories.has('pio'),
      mmio: this.categories.has('mmio') || this.categories.has('virtio'),
    };
    const tracing = this.categories.size > 0;
    const lossless = tracing && this.options.traceFile !== undefined;
    const ringSlots = !tracing ? 1 : lossless ? FILE_RING_SLOTS : this.options.traceLast;
    const descriptors = Array.from({ length: vcpus }, () =>
      createRecorderDescriptor({ ringSlots, lossless, events, ranges: this.ranges, bucketMs: BUCKET_MS, originMs: this.originMs }),
    );
    this.readers = descriptors.map((d) => new ExitRecordReader(d));
    if (lossless) {
      this.traceFd = openSync(this.options.traceFile!, 'w', 0o600);
      this.drainTimer = setInterval(() => this.drainToFile(), DRAIN_INTERVAL_MS).unref();
    }
    return descriptors;
  }

  /** The guest's console as it streams past: its first line, and the kernel starting init. */
  console(bytes: Uint8Array): void {
    for (const b of bytes) {
      if (b !== 0x0a) {
        if (this.consoleLine.length < 512) this.consoleLine += String.fromCharCode(b);
        continue;
      }
      this.consoleLines++;
      if (this.consoleLines === 1) this.mark('first console line');
      if (INIT_LINES.some((l) => this.consoleLine.includes(l))) this.mark('init');
      this.consoleLine = '';
    }
  }

  private traceLines(): string[] {
    const lines: { timeMs: number; line: string }[] = [];
    this.readers.forEach((reader, vcpu) => {
      for (const event of reader.take()) {
        const device = event.reason === 'pio' || event.reason === 'mmio' ? deviceAt(this.ranges, event.reason, event.address) : undefined;
        if (traced(event, device, this.categories)) lines.push({ timeMs: event.timeMs, line: formatTraceLine(event, vcpu, this.originMs, this.ranges) });
      }
    });
    return lines.sort((a, b) => a.timeMs - b.timeMs).map((l) => l.line);
  }

  private drainToFile(): void {
    const lines = this.traceLines();
    if (lines.length > 0) writeSync(this.traceFd!, `${lines.join('\n')}\n`);
  }

  /** After the vCPUs have stopped: the rest of the trace, the statistics, the timeline. */
  finish(): void {
    if (this.drainTimer !== undefined) clearInterval(this.drainTimer);
    const lines = this.traceLines();
    const records = this.readers.map((r) => r.snapshot());
    if (this.traceFd !== undefined) {
      if (lines.length > 0) writeSync(this.traceFd, `${lines.join('\n')}\n`);
      closeSync(this.traceFd);
    } else if (this.categories.size > 0) {
      const lost = records.reduce((n, r) => n + r.eventsLost, 0);
      this.report(`ts-vmm: trace: the last ${lines.length} events${lost > 0 ? ` (${lost} earlier ones not kept: --trace-file keeps all)` : ''}\n`);
      if (lines.length > 0) this.report(`${lines.join('\n')}\n`);
    }
    if (this.options.stats !== undefined && this.options.stats !== false) {
      const stats = runStats(records);
      if (typeof this.options.stats === 'string') writeFileSync(this.options.stats, `${JSON.stringify(stats, null, 2)}\n`, { mode: 0o600 });
      else this.report(formatRunStats(stats));
    }
    if (this.options.timeline !== undefined) writeFileSync(this.options.timeline, this.timeline(records), { mode: 0o600 });
  }

  private timeline(records: readonly VcpuRecord[]): string {
    // Each virtio device's probe is the driver's first access to its window, whichever vCPU made it.
    const probes = records
      .flatMap((r) => r.devices)
      .filter((d) => d.firstAccessMs !== undefined && isVirtioDevice(d.name) && !d.name.endsWith('interrupt status'))
      .sort((a, b) => a.firstAccessMs! - b.firstAccessMs!);
    for (const device of probes) this.mark(`${withoutDirectories(device.name)} probe`, device.firstAccessMs);
    const endMs = performance.timeOrigin + performance.now() - this.originMs;
    return renderTimeline({
      title: 'ts-vmm boot timeline',
      durationMs: endMs,
      milestones: this.milestones,
      vcpus: records.map((r, vcpu) => {
        const last = r.histogram.findLastIndex((n) => n > 0);
        return { vcpu, counts: r.histogram.slice(0, last + 1), bucketMs: r.bucketMs, startMs: r.originMs - this.originMs };
      }),
    });
  }
}
