// Runs inside the lab guest, started by its /init: executes the plan's commands one after another
// and streams their output and exit status to the host over the result serial port.
//   node guest-agent.js <plan.json> <result-device>
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { constants, readFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { processIds, processReport, readOr } from '../sys/process-report.js';
import { encodeRecord, type LabPlan, type LabRecord, type PlannedCommand } from './protocol.js';

/** Base64 grows data by 4/3; 3 KiB chunks keep each record line around 4 KiB. */
const CHUNK = 3072;
/** Output queued for the serial port beyond which the command's pipes are paused. */
const QUEUE_LIMIT = 1 << 20;

/**
 * The result port, written in order off the event loop: a serial port that stops draining must not
 * stop this process, whose timers (the idle watchdog) have to keep running.
 */
class Channel {
  private tail: Promise<void> = Promise.resolve();
  private queued = 0;
  private waiters: (() => void)[] = [];

  private constructor(private readonly port: FileHandle) {}

  static async open(device: string): Promise<Channel> {
    return new Channel(await open(device, constants.O_WRONLY | constants.O_NOCTTY));
  }

  send(record: LabRecord): void {
    const bytes = Buffer.from(encodeRecord(record));
    this.queued += bytes.length;
    this.tail = this.tail.then(async () => {
      // A serial port accepts what fits in its buffer: short writes, never drops.
      for (let done = 0; done < bytes.length; ) done += (await this.port.write(bytes, done)).bytesWritten;
      this.queued -= bytes.length;
      if (this.queued <= QUEUE_LIMIT / 2) for (const wake of this.waiters.splice(0)) wake();
    });
  }

  get congested(): boolean {
    return this.queued > QUEUE_LIMIT;
  }

  /** Resolves once the queue is back under half its limit. */
  relieved(): Promise<void> {
    return new Promise((resolve) => (this.queued <= QUEUE_LIMIT / 2 ? resolve() : this.waiters.push(resolve)));
  }

  /** Resolves once everything sent is written. */
  drained(): Promise<void> {
    return this.tail;
  }
}

/** Every process with its state, what it waits in (wchan) and each thread's kernel stack. */
function labProcessReport(): string {
  return `${processReport().join('\n').replace(/^/gm, 'lab: ')}\n`;
}

/** `root` and every process below it, whatever process group or session they moved to. */
function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const pid of processIds()) {
    // The parent is the 2nd field after the parenthesised command name, which may itself hold spaces.
    const stat = readOr(`/proc/${pid}/stat`, '');
    const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    children.set(parent, [...(children.get(parent) ?? []), Number(pid)]);
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]!) ?? []));
  return tree;
}

function runCommand(index: number, command: PlannedCommand, channel: Channel): Promise<void> {
  const send = (record: LabRecord): void => channel.send(record);
  return new Promise((resolve) => {
    send({ kind: 'start', index });
    const [program, ...args] = command.argv;
    // Node may emit 'close' after 'error' for a program that never started: one exit record only.
    let ended = false;
    const end = (status: number | null, signal: string | null): void => {
      if (ended) return;
      ended = true;
      send({ kind: 'exit', index, status, signal });
      resolve();
    };
    const cannotRun = (e: Error): void => {
      if (!ended) send({ kind: 'err', index, data: Buffer.from(`lab: cannot run ${program}: ${e.message}\n`) });
      end(127, null);
    };
    let child: ChildProcessByStdio<null, Readable, Readable>;
    try {
      child = spawn(program ?? '', args, { cwd: command.cwd, env: command.env, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      // spawn throws synchronously for some failures (E2BIG, a bad cwd type) and emits 'error' for others.
      cannotRun(e as Error);
      return;
    }
    const forwardBytes = (kind: 'out' | 'err', data: Buffer): void => {
      for (let at = 0; at < data.length; at += CHUNK) send({ kind, index, data: data.subarray(at, at + CHUNK) });
    };
    let idle: NodeJS.Timeout | undefined;
    const watch = (): void => {
      if (command.idleTimeoutMs === undefined) return;
      clearTimeout(idle);
      idle = setTimeout(() => {
        const report = labProcessReport();
        forwardBytes('err', Buffer.from(`lab: no output for ${command.idleTimeoutMs} ms; killing the command. What every process waits on:\n${report}`));
        // Also on the console (one line per process), which reaches the host even if the result port is stuck.
        process.stderr.write(
          `lab: command ${index} silent for ${command.idleTimeoutMs} ms; processes:\n${report
            .split('\n')
            .filter((l) => l.startsWith('lab: pid') || l.startsWith('lab: load'))
            .join('\n')}\n`,
        );
        if (child.pid === undefined) return;
        for (const pid of processTree(child.pid)) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* already gone */
          }
        }
      }, command.idleTimeoutMs);
    };
    const forward =
      (kind: 'out' | 'err') =>
      (data: Buffer): void => {
        watch();
        forwardBytes(kind, data);
        if (!channel.congested) return;
        child.stdout.pause();
        child.stderr.pause();
        void channel.relieved().then(() => {
          child.stdout.resume();
          child.stderr.resume();
        });
      };
    watch();
    child.stdout.on('data', forward('out'));
    child.stderr.on('data', forward('err'));
    child.on('error', cannotRun);
    // 'close' (not 'exit') waits for both pipes to drain, so no output follows the exit record.
    child.on('close', (status, signal) => {
      clearTimeout(idle);
      end(status, signal);
    });
  });
}

async function main(): Promise<void> {
  const [planPath, device] = process.argv.slice(2);
  if (planPath === undefined || device === undefined) throw new Error('usage: guest-agent <plan.json> <result-device>');
  const channel = await Channel.open(device);
  try {
    const plan = JSON.parse(readFileSync(planPath, 'utf8')) as LabPlan;
    for (const [index, command] of plan.commands.entries()) await runCommand(index, command, channel);
    channel.send({ kind: 'done' });
  } catch (e) {
    channel.send({ kind: 'fail', message: e instanceof Error ? (e.stack ?? e.message) : String(e) });
  }
  // init powers the lab off when this process ends: everything must be on the wire first.
  await channel.drained();
}

await main();
