// The options that watch a run (--trace, --trace-file, --trace-last, --stats, --timeline), shared by
// `ts-vmm boot`, which does the watching, and `ts-vmm run`, which hands them on to its `ts-vmm boot`.
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { parseTraceCategories, type TraceCategory } from '../vmm/exit-trace-format.js';
import { positiveInteger } from './arguments.js';

export const DEFAULT_TRACE_LAST = 1000;

export interface WatchCommandOptions {
  trace?: TraceCategory[];
  traceFile?: string;
  traceLast: number;
  stats?: boolean | string;
  timeline?: string;
}

export function addWatchOptions(command: Command): Command {
  return command
    .option('--trace <what>', 'trace VM exits: a comma list of exits, pio, mmio, virtio (one line per event, on stderr at exit)', parseTraceCategories)
    .option('--trace-file <file>', 'write every traced event to this file as the run goes, instead of the last ones at exit')
    .option('--trace-last <n>', 'how many of the latest traced events to print at exit', positiveInteger, DEFAULT_TRACE_LAST)
    .option('--stats [file]', 'at exit, exits per reason and per device and guest against VMM time per vCPU (stderr, or JSON into the file)')
    .option('--timeline <file.svg>', 'draw the boot as an SVG timeline: milestones and exit density per vCPU');
}

/** Refuses what cannot work, before anything starts. */
export function checkWatchOptions(options: WatchCommandOptions): void {
  if (options.traceFile !== undefined && options.trace === undefined) throw new Error('--trace-file needs --trace');
}

export function watching(options: WatchCommandOptions): boolean {
  return options.trace !== undefined || options.stats !== undefined || options.timeline !== undefined;
}

/** The same options as `ts-vmm boot` arguments, files made absolute (the child may not share the meaning of a relative path). */
export function watchBootArguments(options: WatchCommandOptions): string[] {
  const args: string[] = [];
  if (options.trace !== undefined) args.push('--trace', options.trace.join(','), '--trace-last', String(options.traceLast));
  if (options.traceFile !== undefined) args.push('--trace-file', resolve(options.traceFile));
  if (options.stats === true) args.push('--stats');
  else if (typeof options.stats === 'string') args.push('--stats', resolve(options.stats));
  if (options.timeline !== undefined) args.push('--timeline', resolve(options.timeline));
  return args;
}
