// Host programs carried into the lab guest, and the shared libraries they need there.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The program's path on PATH, or in the usual system directories (root's PATH may lack sbin). */
export function findProgram(program: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  return dirs.map((d) => join(d, program)).find((p) => existsSync(p));
}

const PT_INTERP = 3;

/** The dynamic loader an ELF64 little-endian binary names (PT_INTERP), or undefined for a static one. */
async function programInterpreter(binary: string): Promise<string | undefined> {
  const file = await open(binary, 'r');
  try {
    const header = Buffer.alloc(64);
    await file.read(header, 0, 64, 0);
    if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) {
      throw new Error(`${binary} is not a little-endian ELF64 binary`);
    }
    const phoff = Number(header.readBigUInt64LE(0x20));
    const phentsize = header.readUInt16LE(0x36);
    const phnum = header.readUInt16LE(0x38);
    const table = Buffer.alloc(phentsize * phnum);
    await file.read(table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) {
      const entry = table.subarray(i * phentsize);
      if (entry.readUInt32LE(0) !== PT_INTERP) continue;
      const name = Buffer.alloc(Number(entry.readBigUInt64LE(32)));
      await file.read(name, 0, name.length, Number(entry.readBigUInt64LE(8)));
      return name.toString('latin1').replace(/\0.*$/s, '');
    }
    return undefined;
  } finally {
    await file.close();
  }
}

/**
 * Shared libraries (including the dynamic loader) a binary needs, as its own loader resolves them
 * (`ld.so --list`, what ldd runs; ldd itself is a bash script the lab does not carry); none for
 * static binaries.
 */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const loader = await programInterpreter(binary);
  if (loader === undefined) return [];
  let out: string;
  try {
    out = (await execFileAsync(loader, ['--list', binary])).stdout;
  } catch (e) {
    const err = e as { stderr?: string; code?: string };
    throw new Error(`${loader} --list ${binary} failed: ${err.stderr?.trim() || err.code}`);
  }
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    if (line.includes('not found')) throw new Error(`${binary} needs a library that is missing: ${line.trim()}`);
    const path = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line)?.[1];
    if (path) libs.push(path);
  }
  return libs;
}
