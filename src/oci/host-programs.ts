// Host programs carried into a guest (the lab's, or cryptsetup in a confidential run's initramfs), and the shared libraries they need there.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { PT_INTERP, readElf64Headers } from '../boot/elf64.js';

const execFileAsync = promisify(execFile);

/** The program's path on PATH, or in the usual system directories (root's PATH may lack sbin). */
export function findProgram(program: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  return dirs.map((d) => join(d, program)).find((p) => existsSync(p));
}

/** Enough of a binary's start for its file and program headers. */
const HEADERS_BYTES = 64 * 1024;

/** The dynamic loader an ELF64 little-endian binary names (PT_INTERP), or undefined for a static one. */
async function programInterpreter(binary: string): Promise<string | undefined> {
  const file = await open(binary, 'r');
  try {
    const start = Buffer.alloc(HEADERS_BYTES);
    const { bytesRead } = await file.read(start, 0, start.length, 0);
    const interp = readElf64Headers(start.subarray(0, bytesRead), binary).programHeaders.find((ph) => ph.type === PT_INTERP);
    if (interp === undefined) return undefined;
    const name = Buffer.alloc(interp.filesz);
    await file.read(name, 0, name.length, interp.offset);
    return name.toString('latin1').replace(/\0.*$/s, '');
  } finally {
    await file.close();
  }
}

/**
 * Shared libraries (including the dynamic loader) a binary needs, as its own loader resolves them
 * (`ld.so --list`, what ldd runs; ldd itself is a bash script the lab does not carry); none for
 * static binaries. A shared library names no loader: give `sharedObject` and this process's loader lists it.
 */
export async function sharedLibraries(binary: string, sharedObject = false): Promise<string[]> {
  const loader = await programInterpreter(sharedObject ? process.execPath : binary);
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
