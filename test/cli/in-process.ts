// Runs `ts-vmm ...args` in this process, as main() would for the command line: its exit status, and what it
// wrote to stdout and to stderr. Faster than a child process for commands that need no process of their own.
import { main } from '../../src/cli/main.js';

export interface InProcessResult {
  status: number;
  out: string;
  err: string;
}

export async function runInProcess(...args: string[]): Promise<InProcessResult> {
  let out = '';
  let err = '';
  const write = process.stdout.write.bind(process.stdout);
  const writeErr = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((chunk: string) => {
    out += chunk;
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => {
    err += chunk;
    return true;
  }) as typeof process.stderr.write;
  const before = process.exitCode;
  try {
    process.exitCode = undefined;
    const status = await main(['node', 'ts-vmm', ...args]);
    return { status, out, err };
  } finally {
    process.stdout.write = write;
    process.stderr.write = writeErr;
    process.exitCode = before;
  }
}
