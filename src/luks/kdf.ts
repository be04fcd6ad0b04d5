// Key derivation for keyslots: PBKDF2 (node:crypto) and Argon2i/Argon2id (@noble/hashes), with limits that a
// hostile header cannot exceed: the costs are checked before any memory is taken or any round is run.
import { argon2iAsync, argon2idAsync } from '@noble/hashes/argon2.js';
import { pbkdf2 } from 'node:crypto';
import { promisify } from 'node:util';
import { LuksCostError } from './errors.js';
import { hashSize } from './hash.js';

const pbkdf2Async = promisify(pbkdf2);

export type Kdf =
  | { type: 'pbkdf2'; hash: string; iterations: number; salt: Buffer }
  | { type: 'argon2i' | 'argon2id'; time: number; memoryKiB: number; cpus: number; salt: Buffer };

export interface KdfLimits {
  /** Most PBKDF2 iterations accepted (keyslots and digests). */
  maxPbkdf2Iterations: number;
  /** Most Argon2 memory accepted, in KiB. */
  maxArgon2MemoryKiB: number;
  /** Most Argon2 passes accepted. */
  maxArgon2Time: number;
  /** Most Argon2 lanes accepted. */
  maxArgon2Cpus: number;
}

/**
 * Defaults: what cryptsetup itself writes on a fast machine fits with room to spare (its Argon2 memory cap is
 * 1 GiB, its time and PBKDF2 counts come from a 2 s benchmark), and nothing above takes more than about a minute.
 */
export const DEFAULT_KDF_LIMITS: KdfLimits = {
  maxPbkdf2Iterations: 1 << 24,
  maxArgon2MemoryKiB: 1 << 20,
  maxArgon2Time: 32,
  maxArgon2Cpus: 16,
};

function checkRange(what: string, value: number, min: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < min || value > max) throw new LuksCostError(`${what} ${value} outside ${min}..${max}`);
}

export function checkPbkdf2Iterations(iterations: number, limits: KdfLimits): void {
  checkRange('PBKDF2 iterations', iterations, 1, limits.maxPbkdf2Iterations);
}

export function checkKdf(kdf: Kdf, limits: KdfLimits): void {
  if (kdf.type === 'pbkdf2') {
    hashSize(kdf.hash);
    checkPbkdf2Iterations(kdf.iterations, limits);
    return;
  }
  checkRange('argon2 time', kdf.time, 1, limits.maxArgon2Time);
  checkRange('argon2 cpus', kdf.cpus, 1, limits.maxArgon2Cpus);
  // Argon2 needs at least 8 KiB per lane.
  checkRange('argon2 memory KiB', kdf.memoryKiB, 8 * kdf.cpus, limits.maxArgon2MemoryKiB);
}

/** Derives `length` bytes from the passphrase; the costs must have passed checkKdf. */
export async function deriveKey(kdf: Kdf, passphrase: Buffer, length: number, limits: KdfLimits): Promise<Buffer> {
  checkKdf(kdf, limits);
  if (kdf.type === 'pbkdf2') return pbkdf2Async(passphrase, kdf.salt, kdf.iterations, length, kdf.hash);
  const argon2 = kdf.type === 'argon2id' ? argon2idAsync : argon2iAsync;
  const key = await argon2(passphrase, kdf.salt, {
    t: kdf.time,
    m: kdf.memoryKiB,
    p: kdf.cpus,
    dkLen: length,
    maxmem: kdf.memoryKiB * 1024 + (1 << 20),
    asyncTick: 50,
  });
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength);
}

/** The PBKDF2 digest that binds a volume key to its header (LUKS2 digest, LUKS1 mk-digest). */
export function keyDigest(volumeKey: Buffer, hash: string, salt: Buffer, iterations: number, length: number): Promise<Buffer> {
  return pbkdf2Async(volumeKey, salt, iterations, length, hash);
}
