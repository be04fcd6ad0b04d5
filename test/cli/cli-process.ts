// Runs the ts-vmm command line as a user would, in a scratch directory that is also its TMPDIR, so what a
// command leaves behind (run directories, state) can be checked without other processes' files in the way.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliEntry } from '../../src/sys/project-paths.js';

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Scratch {
  dir: string;
  /** Environment for commands: TMPDIR, caches and state inside `dir`. */
  env: NodeJS.ProcessEnv;
}

export function scratch(prefix: string): Scratch {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  return {
    dir,
    env: { ...process.env, TMPDIR: tmp, TS_VMM_RUN_CACHE: join(dir, 'cache'), TS_VMM_STATE: join(dir, 'state'), TS_VMM_CACHE: join(dir, 'assets') },
  };
}

/** Runs `ts-vmm args...`; kills it after `timeoutMs` (the result then has signal SIGKILL). */
export function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 15_000): Promise<CliResult> {
  const child = spawn(process.execPath, [cliEntry(), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => {
    stdout += c.toString();
  });
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    }),
  );
}

/** Names in `dir` starting with `prefix` (none if `dir` does not exist). */
export function entries(dir: string, prefix = ''): string[] {
  try {
    return readdirSync(dir).filter((n) => n.startsWith(prefix));
  } catch {
    return [];
  }
}
