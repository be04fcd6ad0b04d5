// aes-xts-plain64 over whole sectors, as dm-crypt does it: each sector is its own XTS message whose tweak is
// LE64 of the sector's position in 512-byte units (also for larger sectors; LUKS2 never sets iv_large_sectors).
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto';
import { LuksUnsupportedError } from './errors.js';

/** The only data and keyslot cipher supported: dm-crypt's `aes-xts-plain64`. */
export const XTS_PLAIN64 = 'aes-xts-plain64';

export class XtsSectorCipher {
  private readonly key: KeyObject;
  private readonly algorithm: 'aes-128-xts' | 'aes-256-xts';
  private readonly tweak = Buffer.alloc(16);

  /** `key` is the XTS key pair: 32 bytes (AES-128) or 64 bytes (AES-256). */
  constructor(
    key: Buffer,
    readonly sectorSize: number,
  ) {
    if (key.length === 64) this.algorithm = 'aes-256-xts';
    else if (key.length === 32) this.algorithm = 'aes-128-xts';
    else throw new LuksUnsupportedError(`aes-xts-plain64 with a ${key.length * 8}-bit key (supported: 256, 512)`);
    // OpenSSL (as the kernel in FIPS mode) refuses an XTS key whose two halves are equal.
    const half = key.length / 2;
    if (key.subarray(0, half).equals(key.subarray(half))) throw new LuksUnsupportedError('aes-xts-plain64 key whose two halves are equal');
    this.key = createSecretKey(key);
  }

  /**
   * Encrypts or decrypts `data` (whole sectors) in place into `out` (may be `data`); the first sector's IV is
   * `firstIv`, counted in 512-byte units, and each next sector's is sectorSize/512 more.
   */
  run(decrypt: boolean, data: Buffer, out: Buffer, firstIv: bigint): void {
    const size = this.sectorSize;
    const step = BigInt(size / 512);
    let iv = firstIv;
    for (let offset = 0; offset < data.length; offset += size, iv += step) {
      this.tweak.writeBigUInt64LE(iv);
      const cipher = decrypt ? createDecipheriv(this.algorithm, this.key, this.tweak) : createCipheriv(this.algorithm, this.key, this.tweak);
      cipher.update(data.subarray(offset, offset + size)).copy(out, offset);
    }
  }
}
