// The native sector loop (xts-sectors.c through libcrypto) against node:crypto's own aes-xts, one message per
// sector as dm-crypt's aes-xts-plain64 makes them, over random keys, sector sizes, lengths and starting IVs
// (across the 64-bit wrap).
import { expect } from 'chai';
import fc from 'fast-check';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { LuksUnsupportedError } from '../../src/luks/errors.js';
import { XtsSectorCipher } from '../../src/luks/xts.js';

/** aes-xts-plain64 the slow, obvious way: a node:crypto XTS message per sector, the IV its LE64 position. */
function reference(decrypt: boolean, key: Buffer, sectorSize: number, data: Buffer, firstIv: bigint): Buffer {
  const algorithm = key.length === 64 ? 'aes-256-xts' : 'aes-128-xts';
  const out = Buffer.alloc(data.length);
  for (let offset = 0, iv = firstIv; offset < data.length; offset += sectorSize, iv += BigInt(sectorSize / 512)) {
    const tweak = Buffer.alloc(16);
    tweak.writeBigUInt64LE(BigInt.asUintN(64, iv));
    const cipher = decrypt ? createDecipheriv(algorithm, key, tweak) : createCipheriv(algorithm, key, tweak);
    cipher.update(data.subarray(offset, offset + sectorSize)).copy(out, offset);
  }
  return out;
}

const xtsKey = (bytes: number) =>
  fc
    .uint8Array({ minLength: bytes, maxLength: bytes })
    .map(Buffer.from)
    .filter((k) => !k.subarray(0, bytes / 2).equals(k.subarray(bytes / 2)));

describe('luks: aes-xts-plain64 sector by sector', () => {
  it('property: equals node:crypto aes-xts sector by sector, both ways, in place or not', () => {
    fc.assert(
      fc.property(
        fc.record({
          key: fc.oneof(xtsKey(64), xtsKey(32)),
          sectorSize: fc.constantFrom(512, 1024, 2048, 4096),
          sectors: fc.integer({ min: 0, max: 600 }),
          firstIv: fc.oneof(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: 1n << 20n }), fc.constant((1n << 64n) - 8n)),
          inPlace: fc.boolean(),
        }),
        ({ key, sectorSize, sectors, firstIv, inPlace }) => {
          const plaintext = randomBytes(sectors * sectorSize);
          const cipher = new XtsSectorCipher(key, sectorSize);
          const expected = reference(false, key, sectorSize, plaintext, firstIv);
          const encrypted = inPlace ? Buffer.from(plaintext) : Buffer.alloc(plaintext.length);
          cipher.run(false, inPlace ? encrypted : plaintext, encrypted, firstIv);
          expect(encrypted.equals(expected)).to.equal(true);
          expect(reference(true, key, sectorSize, encrypted, firstIv).equals(plaintext)).to.equal(true);
          const decrypted = Buffer.alloc(encrypted.length);
          cipher.run(true, encrypted, decrypted, firstIv);
          expect(decrypted.equals(plaintext)).to.equal(true);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('sectors run one at a time give the same bytes as run together (the IV steps by sectorSize/512)', () => {
    const key = randomBytes(64);
    const cipher = new XtsSectorCipher(key, 4096);
    const data = randomBytes(35 * 4096);
    const whole = Buffer.alloc(data.length);
    cipher.run(false, data, whole, 40n);
    for (let offset = 0; offset < data.length; offset += 4096) {
      const one = Buffer.alloc(4096);
      cipher.run(false, data.subarray(offset, offset + 4096), one, 40n + BigInt(offset / 512));
      expect(one.equals(whole.subarray(offset, offset + 4096))).to.equal(true);
    }
  });

  it('refuses keys of other sizes, equal key halves, other sector sizes and partial sectors', () => {
    expect(() => new XtsSectorCipher(randomBytes(48), 4096)).to.throw(LuksUnsupportedError, /384-bit key/);
    expect(() => new XtsSectorCipher(Buffer.alloc(64, 7), 4096)).to.throw(LuksUnsupportedError, /halves are equal/);
    expect(() => new XtsSectorCipher(randomBytes(64), 8192)).to.throw(LuksUnsupportedError, /8192-byte sectors/);
    const cipher = new XtsSectorCipher(randomBytes(64), 4096);
    expect(() => cipher.run(false, Buffer.alloc(4097), Buffer.alloc(4097), 0n)).to.throw(RangeError, /whole 4096-byte sectors/);
  });
});
