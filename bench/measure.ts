// What the benchmarks share: the median of samples, the time from spawning a program to a marker in its output, and
// a process's CPU time.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export const median = (xs: readonly number[]): number => {
  if (xs.length === 0) throw new Error('median of no samples');
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** utime, stime and guest_time (part of utime) of a /proc stat file, in ms; a process's includes its ended threads. */
export function statTimes(statPath: string): { user: number; system: number; total: number; guest: number } {
  const stat = readFileSync(statPath, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ": state is field 3, utime 14, stime 15, guest_time 43.
  const [user, system, guest] = [fields[11], fields[12], fields[40]].map((f) => Number(f) * TICK_MS) as [number, number, number];
  return { user, system, total: user + system, guest };
}

export interface OutputSample {
  firstOutputMs: number;
  totalMs: number;
  /** What the program wrote on stderr. */
  stderr: string;
  /** What `atMarker` measured of the running program when the marker appeared. */
  atMarker?: number;
}

/**
 * Starts `command`, resolves when it exits, with the time until `marker` first appeared on its stdout (and what
 * `atMarker` then measured of the process, given its pid).
 */
export function timeToOutput(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  marker: string,
  timeoutMs = 120_000,
  atMarker?: (pid: number) => Promise<number>,
): Promise<OutputSample> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const ms = (): number => Number(process.hrtime.bigint() - started) / 1e6;
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let seen = '';
    let first: number | undefined;
    let stderr = '';
    let measured: Promise<number> | undefined;
    child.stdout.on('data', (chunk: Buffer) => {
      if (first !== undefined) return;
      seen += chunk.toString('latin1');
      if (!seen.includes(marker)) return;
      first = ms();
      measured = atMarker?.(child.pid!);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (first === undefined) reject(new Error(`${command} exited (${code}) without printing "${marker}":\n${stderr.slice(-2000)}`));
      else {
        const sample = { firstOutputMs: first, totalMs: ms(), stderr };
        if (measured === undefined) resolve(sample);
        else measured.then((value) => resolve({ ...sample, atMarker: value }), reject);
      }
    });
  });
}
