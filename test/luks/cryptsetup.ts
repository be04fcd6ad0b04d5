// Real cryptsetup, the reference every LUKS test checks against. Passphrases reach it only through a 0600 key
// file (never argv); every command used works on plain files without root or device-mapper.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const CRYPTSETUP = '/usr/sbin/cryptsetup';

export interface Result {
  status: number;
  stdout: string;
  stderr: string;
}

export function cryptsetup(...args: string[]): Result {
  const r = spawnSync(CRYPTSETUP, args, { encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Like cryptsetup(), but a non-zero exit fails the test with cryptsetup's own words. */
export function cryptsetupOk(...args: string[]): string {
  const r = cryptsetup(...args);
  if (r.status !== 0) throw new Error(`cryptsetup ${args[0]} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** A temporary directory for images and 0600 key files. */
export class Scratch {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-luks-'));
  private keys = 0;

  file(name: string): string {
    return path.join(this.dir, name);
  }

  /** A 0600 file holding exactly the passphrase bytes (no newline), for --key-file. */
  keyFile(passphrase: Buffer): string {
    const file = this.file(`key-${this.keys++}`);
    writeFileSync(file, passphrase, { mode: 0o600 });
    return file;
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A small PBKDF2 cost for cryptsetup-made keyslots, so the suite stays quick. */
export const FAST_PBKDF2 = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];
/** A small Argon2id cost cryptsetup accepts for a new keyslot (time 4, its minimum; 1 MiB; one lane). */
export const FAST_ARGON2ID = ['--pbkdf', 'argon2id', '--pbkdf-memory', '1024', '--pbkdf-force-iterations', '4', '--pbkdf-parallel', '1'];
