// aes-xts-plain64 over whole sectors, as dm-crypt does it: each sector is its own XTS message whose tweak is
// LE64 of the sector's position in 512-byte units (also for larger sectors; LUKS2 never sets iv_large_sectors).
// A node:crypto Cipheriv per sector costs about 5 µs of set-up against 0.6 µs of AES, so XTS is composed here
// instead: E_K2 of all a batch's IVs in one AES-ECB call, every block XORed with its tweak (xts-masks.ts), E_K1
// (or D_K1) of the whole batch in one AES-ECB call (aes-ecb.ts), and the tweaks XORed in again.
import { AesEcb } from './aes-ecb.js';
import { LuksUnsupportedError } from './errors.js';
import { MASK_BATCH, TweakMasks } from './xts-masks.js';

/** The only data and keyslot cipher supported: dm-crypt's `aes-xts-plain64`. */
export const XTS_PLAIN64 = 'aes-xts-plain64';

export class XtsSectorCipher {
  private readonly encryptData: AesEcb;
  private readonly decryptData: AesEcb;
  private readonly encryptTweaks: AesEcb;
  private readonly masks = new TweakMasks();

  /** `key` is the XTS key pair: 32 bytes (AES-128) or 64 bytes (AES-256). */
  constructor(
    key: Buffer,
    readonly sectorSize: number,
  ) {
    if (key.length !== 64 && key.length !== 32) {
      throw new LuksUnsupportedError(`aes-xts-plain64 with a ${key.length * 8}-bit key (supported: 256, 512)`);
    }
    if (![512, 1024, 2048, 4096].includes(sectorSize)) throw new LuksUnsupportedError(`aes-xts-plain64 with ${sectorSize}-byte sectors`);
    // OpenSSL (as the kernel in FIPS mode) refuses an XTS key whose two halves are equal; so does this.
    const half = key.length / 2;
    if (key.subarray(0, half).equals(key.subarray(half))) throw new LuksUnsupportedError('aes-xts-plain64 key whose two halves are equal');
    this.encryptData = new AesEcb(key.subarray(0, half), false);
    this.decryptData = new AesEcb(key.subarray(0, half), true);
    this.encryptTweaks = new AesEcb(key.subarray(half), false);
  }

  /**
   * Encrypts or decrypts `data` (whole sectors) into `out` (may be `data`); the first sector's IV is
   * `firstIv`, counted in 512-byte units, and each next sector's is sectorSize/512 more.
   */
  run(decrypt: boolean, data: Buffer, out: Buffer, firstIv: bigint): void {
    const size = this.sectorSize;
    if (data.length % size !== 0 || out.length < data.length) throw new RangeError(`${data.length} bytes are not whole ${size}-byte sectors`);
    const step = BigInt(size / 512);
    const { masks } = this;
    const batch = MASK_BATCH - (MASK_BATCH % size);
    let iv = firstIv;
    for (let offset = 0; offset < data.length; offset += batch) {
      const length = Math.min(batch, data.length - offset);
      const sectors = length / size;
      for (let s = 0; s < sectors; s++, iv += step) {
        masks.tweaks.writeBigUInt64LE(BigInt.asUintN(64, iv), s * 16);
        masks.tweaks.fill(0, s * 16 + 8, s * 16 + 16);
      }
      this.encryptTweaks.run(masks.tweaks.subarray(0, sectors * 16));
      data.copy(masks.data, 0, offset, offset + length);
      masks.apply(sectors, size);
      (decrypt ? this.decryptData : this.encryptData).run(masks.data.subarray(0, length));
      masks.apply(sectors, size);
      masks.data.copy(out, offset, 0, length);
    }
  }
}
