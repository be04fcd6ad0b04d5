// runInLab: boots the stock Debian kernel under qemu-system-x86_64 with TCG and `-cpu max` (which
// emulates AMD SVM with nested paging, so the guest has a working /dev/kvm) and runs commands there.
// The kernel log and init messages go to the first serial port (relayed as `console`); the guest
// agent's framed records (src/lab/protocol.ts) come back on the second, over a unix socket.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer, type Socket } from 'node:net';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AssetOptions, Log } from '../assets/debian.js';
import { stderrLog } from '../assets/debian.js';
import { findProgram } from '../oci/host-programs.js';
import { LAB_PATHS, buildLabImage, type LabFile } from './image.js';
import { RecordParser, type LabPlan, type LabRecord, type PlannedCommand } from './protocol.js';
import { cpuTimes } from '../sys/cpu-times.js';

export const QEMU = 'qemu-system-x86_64';

/** One command: a program with arguments (no shell), or a script for the guest's busybox sh. */
export type LabCommand = ({ argv: readonly string[] } | { script: string }) & {
  /** Working directory in the guest; the project copy by default. */
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string>>;
  /** Silence after which the command is diagnosed (process states and kernel stacks) and killed. */
  readonly idleTimeoutMs?: number;
};

export interface LabOptions extends AssetOptions {
  readonly commands: readonly LabCommand[];
  readonly files?: readonly LabFile[];
  /** Carry the container engines (src/lab/image.ts LAB_ENGINES). */
  readonly engines?: boolean;
  /** Environment for every command, over the lab's defaults (PATH, HOME, TS_VMM_CACHE...). */
  readonly env?: Readonly<Record<string, string>>;
  /** Whole boot, all commands included; 10 minutes by default. */
  readonly timeoutMs?: number;
  /**
   * Give up when the lab prints nothing (console or results) for this long: a lab kernel that stopped
   * (see docs/LAB.md) is then reported as `stalled` without waiting for `timeoutMs`.
   */
  readonly silenceTimeoutMs?: number;
  /**
   * Give up sooner when, besides printing nothing, QEMU has used (almost) no CPU for this long: the lab's
   * CPU halted for good (see docs/LAB.md), where a busy but quiet lab keeps QEMU's CPU time growing.
   */
  readonly idleStallMs?: number;
  readonly memoryMiB?: number;
  readonly cpus?: number;
  /** The qemu-system-x86_64 binary; found on PATH by default. */
  readonly qemu?: string;
  /** Live output of the commands, as it arrives. */
  readonly onOutput?: (index: number, stream: 'stdout' | 'stderr', data: Buffer) => void;
  /** Live serial console of the guest (kernel log, init messages). */
  readonly onConsole?: (data: Buffer) => void;
}

export interface LabCommandResult {
  readonly command: LabCommand;
  /** Exit status, or null when a signal ended it. */
  readonly exitStatus: number | null;
  readonly signal: string | null;
  /** Exactly the bytes the command wrote. */
  readonly stdout: Buffer;
  readonly stderr: Buffer;
}

export interface LabResult {
  /** 0 when every command exited 0; otherwise the first failing command's status (128+n for signal n). */
  readonly exitStatus: number;
  readonly commands: readonly LabCommandResult[];
  readonly console: string;
  readonly timings: {
    readonly imageMs: number;
    /** From starting qemu to the first command starting in the guest. */
    readonly bootMs: number;
    readonly totalMs: number;
  };
}

export class LabError extends Error {
  override readonly name = 'LabError';
  /** `stalled`: nothing came out of the lab for `silenceTimeoutMs`; the lab, not a command, stopped. */
  constructor(
    message: string,
    readonly console = '',
    readonly stalled = false,
  ) {
    super(message);
  }
}

const { signals } = constants;
/**
 * One lab CPU: with two (multi-threaded TCG) the lab kernel was seen, about one suite run in three, with
 * both CPUs spinning and nothing running any more, and once dying of a stack overflow in `error_entry`
 * while running a nested guest; with one it was not, and the suite took no longer (the time goes to
 * emulating the nested guests either way).
 */
export const LAB_DEFAULT_CPUS = 1;
const DEFAULTS = { timeoutMs: 600_000, memoryMiB: 2048, cpus: LAB_DEFAULT_CPUS };
const CONSOLE_TAIL_LINES = 40;

const tail = (text: string, lines = CONSOLE_TAIL_LINES): string => text.split('\n').slice(-lines).join('\n');
/** Time the lab kernel gets to print its NMI panic before QEMU is killed. */
const BACKTRACE_GRACE_MS = 10_000;
const BACKTRACE_TAIL_LINES = 200;

/**
 * Injects an NMI into every lab CPU through QEMU's monitor; the lab kernel panics on it and prints each
 * CPU's backtrace on the console (then QEMU exits, -no-reboot). Resolves when QEMU is gone or after a
 * grace period, whatever happens, so the caller can kill QEMU next.
 */
function askForBacktraces(monitorPath: string): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(grace);
      monitor.destroy();
      resolve();
    };
    const grace = setTimeout(done, BACKTRACE_GRACE_MS);
    const monitor = createConnection(monitorPath, () => monitor.write('nmi\n'));
    monitor.on('error', done);
    monitor.on('close', done);
  });
}

export function guestEnvironment(extra: Readonly<Record<string, string>> = {}): Record<string, string> {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    TMPDIR: '/tmp',
    LANG: 'C.UTF-8',
    TS_VMM_CACHE: LAB_PATHS.cache,
    TS_VMM_IN_LAB: '1',
    ...extra,
  };
}

function plan(options: LabOptions): LabPlan {
  if (options.commands.length === 0) throw new LabError('runInLab needs at least one command');
  const commands: PlannedCommand[] = options.commands.map((command) => {
    const argv = 'argv' in command ? command.argv : ['/bin/sh', '-c', command.script];
    if (argv.length === 0 || argv[0] === '') throw new LabError('a lab command has an empty argv');
    const planned = { argv, cwd: command.cwd ?? LAB_PATHS.project, env: guestEnvironment({ ...options.env, ...command.env }) };
    return command.idleTimeoutMs === undefined ? planned : { ...planned, idleTimeoutMs: command.idleTimeoutMs };
  });
  return { commands };
}

/** What the lab's agent reported, command by command, gathered from its records as they arrive. */
class LabRecords {
  readonly outputs: { stdout: Buffer[]; stderr: Buffer[]; both: Buffer[]; exit?: { status: number | null; signal: string | null } }[];
  /** The command running now (the last one started). */
  running: number | undefined;
  firstCommandAt: number | undefined;
  done = false;
  agentFailure: string | undefined;

  constructor(
    commands: number,
    private readonly onOutput: LabOptions['onOutput'],
  ) {
    this.outputs = Array.from({ length: commands }, () => ({ stdout: [], stderr: [], both: [] }));
  }

  readonly take = (record: LabRecord): void => {
    switch (record.kind) {
      case 'start':
        this.firstCommandAt ??= Date.now();
        this.running = record.index;
        break;
      case 'out':
      case 'err': {
        const out = this.outputs[record.index];
        if (out === undefined) return;
        (record.kind === 'out' ? out.stdout : out.stderr).push(record.data);
        out.both.push(record.data);
        this.onOutput?.(record.index, record.kind === 'out' ? 'stdout' : 'stderr', record.data);
        break;
      }
      case 'exit': {
        const out = this.outputs[record.index];
        if (out !== undefined) out.exit = { status: record.status, signal: record.signal };
        break;
      }
      case 'done':
        this.done = true;
        break;
      case 'fail':
        this.agentFailure = record.message;
        break;
    }
  };

  /** The last lines the running command printed, for a report of a lab that stopped responding. */
  runningTail(commands: readonly PlannedCommand[]): string {
    if (this.running === undefined) return '';
    const output = Buffer.concat(this.outputs[this.running]?.both ?? []).toString('utf8');
    return ` while running command ${this.running} (${commands[this.running]?.argv.join(' ')}); its last output lines:\n${tail(output)}\n---`;
  }
}

function qemuArguments(options: LabOptions, kernel: string, initramfs: string, monitorPath: string, resultsPath: string): string[] {
  return [
    '-accel',
    'tcg',
    '-cpu',
    'max',
    '-machine',
    'q35',
    '-m',
    String(options.memoryMiB ?? DEFAULTS.memoryMiB),
    '-smp',
    String(options.cpus ?? DEFAULTS.cpus),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-kernel',
    kernel,
    '-initrd',
    initramfs,
    // An NMI panics (QEMU's `nmi` at a timeout) and the panic prints every CPU's backtrace (panic_print
    // 0x40), so a lab that stopped responding says where each of its CPUs was.
    '-append',
    'console=ttyS0 panic=-1 loglevel=4 mitigations=off unknown_nmi_panic=1 panic_print=0x40',
    '-monitor',
    `unix:${monitorPath},server=on,wait=off`,
    '-chardev',
    'stdio,id=console,signal=off',
    '-serial',
    'chardev:console',
    '-chardev',
    `socket,id=results,path=${resultsPath}`,
    '-serial',
    'chardev:results',
  ];
}

interface QemuExit {
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  stalled: boolean;
  /** How a stall showed itself. */
  stallSign?: string;
}

/** Signals whose default action ends this process, and with it the lab's QEMU. */
const ENDING_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Runs QEMU to its end, relaying the console. At `timeoutMs`, or after `silenceTimeoutMs` without output
 * (`lastOutputAt` is also moved by the results channel), it asks the lab for backtraces and kills QEMU.
 */
function watchQemu(
  qemu: string,
  args: string[],
  monitorPath: string,
  options: LabOptions,
  output: { lastOutputAt: number; consoleChunks: Buffer[] },
): Promise<QemuExit> {
  const timeoutMs = options.timeoutMs ?? DEFAULTS.timeoutMs;
  const silenceTimeoutMs = options.silenceTimeoutMs;
  return new Promise((resolve, reject) => {
    const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    // qemu would outlive this process (a test runner calling process.exit, say) and spin on.
    const killQemu = (): void => {
      child.kill('SIGKILL');
    };
    process.once('exit', killQemu);
    // A signal that ends this process skips 'exit' handlers: QEMU is killed first, then the signal takes its
    // default course (unless someone else in this process handles it).
    const onSignal = (signal: NodeJS.Signals): void => {
      killQemu();
      stopHandlingSignals();
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    const stopHandlingSignals = (): void => {
      for (const signal of ENDING_SIGNALS) process.off(signal, onSignal);
    };
    for (const signal of ENDING_SIGNALS) process.on(signal, onSignal);
    let timedOut = false;
    let stalled = false;
    let stallSign: string | undefined;
    const stopWatching = (): void => {
      clearTimeout(timer);
      clearInterval(silence);
      clearInterval(idle);
    };
    const giveUp = (): void => {
      stopWatching();
      void askForBacktraces(monitorPath).finally(killQemu);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      giveUp();
    }, timeoutMs);
    // Only a caller that asked for it has the lab watched for silence.
    const silence =
      silenceTimeoutMs === undefined
        ? undefined
        : setInterval(
            () => {
              if (Date.now() - output.lastOutputAt < silenceTimeoutMs) return;
              stalled = true;
              stallSign = `no output for ${Math.round(silenceTimeoutMs / 1000)} s`;
              giveUp();
            },
            Math.min(silenceTimeoutMs, 60_000),
          );
    const idleStallMs = options.idleStallMs;
    const idleSince = { at: Date.now(), cpuMs: 0 };
    const idle =
      idleStallMs === undefined
        ? undefined
        : setInterval(
            () => {
              const cpuMs = processCpuMs(child.pid);
              const now = Date.now();
              // Output, or CPU time beyond 1% of the time passed, starts the watch again.
              if (cpuMs === undefined || output.lastOutputAt > idleSince.at || cpuMs - idleSince.cpuMs > (now - idleSince.at) / 100) {
                idleSince.at = now;
                idleSince.cpuMs = cpuMs ?? 0;
              } else if (now - idleSince.at >= idleStallMs) {
                stalled = true;
                stallSign = `no output and QEMU idle for ${Math.round(idleStallMs / 1000)} s`;
                giveUp();
              }
            },
            Math.min(idleStallMs / 6, 10_000),
          );
    const onConsoleData = (data: Buffer): void => {
      output.lastOutputAt = Date.now();
      output.consoleChunks.push(data);
      options.onConsole?.(data);
    };
    child.stdout.on('data', onConsoleData);
    child.stderr.on('data', onConsoleData);
    child.on('error', (e) => {
      stopWatching();
      stopHandlingSignals();
      process.off('exit', killQemu);
      reject(new LabError(`cannot start ${qemu}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      stopWatching();
      stopHandlingSignals();
      process.off('exit', killQemu);
      resolve({ code, signal, timedOut, stalled, stallSign });
    });
  });
}

/** User and system CPU time of a live process from /proc, in ms; undefined once it is gone. */
function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    return cpuTimes(`/proc/${pid}/stat`).total;
  } catch {
    return undefined;
  }
}

/** The commands' results once QEMU has ended, or the reason the lab did not finish them. */
function labOutcome(options: LabOptions, labPlan: LabPlan, records: LabRecords, exit: QemuExit, consoleText: string): Omit<LabResult, 'timings'> {
  if (exit.timedOut || exit.stalled) {
    // A stuck command is the usual cause: name it and show where its own output stopped.
    const what = exit.stalled
      ? `lab guest stalled: ${exit.stallSign}`
      : `lab guest timed out after ${Math.round((options.timeoutMs ?? DEFAULTS.timeoutMs) / 1000)} s`;
    throw new LabError(
      `${what}${records.runningTail(labPlan.commands)}; last console lines (after an NMI asked for every CPU's backtrace):\n${tail(consoleText, BACKTRACE_TAIL_LINES)}`,
      consoleText,
      exit.stalled,
    );
  }
  if (records.agentFailure !== undefined) throw new LabError(`lab guest agent failed: ${records.agentFailure}`, consoleText);
  if (!records.done) {
    const how = exit.code !== null ? `exited with status ${exit.code}` : `was killed by ${exit.signal}`;
    throw new LabError(`lab guest stopped before finishing its commands (${QEMU} ${how}); last console lines:\n${tail(consoleText)}`, consoleText);
  }
  const commands = options.commands.map((command, i): LabCommandResult => {
    const out = records.outputs[i];
    if (out?.exit === undefined) throw new LabError(`lab guest reported no exit status for command ${i}`, consoleText);
    return { command, exitStatus: out.exit.status, signal: out.exit.signal, stdout: Buffer.concat(out.stdout), stderr: Buffer.concat(out.stderr) };
  });
  const failed = commands.find((c) => c.exitStatus !== 0);
  const exitStatus = failed === undefined ? 0 : (failed.exitStatus ?? 128 + (signals[failed.signal as NodeJS.Signals] ?? 0));
  return { exitStatus, commands, console: consoleText };
}

/** Boots the lab once and runs `commands` in order inside it. */
export async function runInLab(options: LabOptions): Promise<LabResult> {
  const started = Date.now();
  const log: Log = options.log ?? stderrLog;
  const labPlan = plan(options);
  const qemu = options.qemu ?? findProgram(QEMU);
  if (qemu === undefined || !existsSync(qemu)) {
    throw new LabError(`${options.qemu ?? QEMU} not found: the lab needs qemu-system-x86_64 (Debian package qemu-system-x86)`);
  }
  const work = await mkdtemp(join(tmpdir(), 'ts-vmm-lab-'));
  try {
    const initramfs = join(work, 'initramfs.cpio');
    const image = await buildLabImage(initramfs, { ...options, log, plan: labPlan });
    const imageMs = Date.now() - started;
    log(`lab: booting ${image.kernel.release} under TCG (initramfs ${(image.bytes / 2 ** 20).toFixed(0)} MiB)`);

    const records = new LabRecords(labPlan.commands.length, options.onOutput);
    const output = { lastOutputAt: Date.now(), consoleChunks: [] as Buffer[] };
    const resultsPath = join(work, 'results.sock');
    const monitorPath = join(work, 'monitor.sock');
    const parser = new RecordParser(records.take);
    const server = createServer((socket: Socket) =>
      socket.on('data', (chunk) => {
        output.lastOutputAt = Date.now();
        parser.push(chunk);
      }),
    );
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(resultsPath, resolve));

    const bootStarted = Date.now();
    let exit: QemuExit;
    try {
      exit = await watchQemu(qemu, qemuArguments(options, image.kernel.vmlinuz, initramfs, monitorPath, resultsPath), monitorPath, options, output);
    } finally {
      server.close();
    }
    const outcome = labOutcome(options, labPlan, records, exit, Buffer.concat(output.consoleChunks).toString('utf8'));
    const finished = Date.now();
    return { ...outcome, timings: { imageMs, bootMs: (records.firstCommandAt ?? finished) - bootStarted, totalMs: finished - started } };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
