// What the benchmarks share: the median of samples, and the time from spawning a program to a marker in its output.
import { spawn } from 'node:child_process';

export const median = (xs: readonly number[]): number => {
  if (xs.length === 0) throw new Error('median of no samples');
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

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
