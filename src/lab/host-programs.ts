// Host programs carried into the lab guest, and the shared libraries they need there.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The program's path on PATH, or in the usual system directories (root's PATH may lack sbin). */
export function findProgram(program: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  return dirs.map((d) => join(d, program)).find((p) => existsSync(p));
}

/** Shared libraries (including the dynamic loader) a binary needs, from ldd; none for static ones. */
export async function sharedLibraries(binary: string): Promise<string[]> {
  let out: string;
  try {
    out = (await execFileAsync('ldd', [binary])).stdout;
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; code?: string };
    if (`${err.stdout}${err.stderr}`.includes('not a dynamic executable')) return [];
    throw new Error(`ldd ${binary} failed: ${err.stderr?.trim() || err.code}`);
  }
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    if (line.includes('not found')) throw new Error(`${binary} needs a library that is missing: ${line.trim()}`);
    const path = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line)?.[1];
    if (path) libs.push(path);
  }
  return libs;
}
