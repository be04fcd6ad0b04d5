// The anti-forensic splitter of LUKS1 and LUKS2 (cryptsetup lib/luks1/af.c): a key is stored as `stripes`
// blocks, all but the last random, chained through a hash-based diffusion, so that losing any part of the
// stored material loses the key.
import { createHash, randomFillSync } from 'node:crypto';
import { hashSize } from './hash.js';

/** The stripe count both LUKS versions use. */
export const AF_STRIPES = 4000;

/** Bytes of AF material for a key, rounded up to whole 512-byte sectors as cryptsetup stores it. */
export const afMaterialSize = (keySize: number, stripes: number): number => Math.ceil((keySize * stripes) / 512) * 512;

/** Replaces each hash-sized chunk i of `block` by H(be32(i) ‖ chunk), truncated to the chunk's length. */
function diffuse(block: Buffer, hash: string): void {
  const size = hashSize(hash);
  const index = Buffer.alloc(4);
  for (let i = 0, offset = 0; offset < block.length; i++, offset += size) {
    const chunk = block.subarray(offset, Math.min(offset + size, block.length));
    index.writeUInt32BE(i);
    createHash(hash).update(index).update(chunk).digest().copy(chunk, 0, 0, chunk.length);
  }
}

function xorInto(target: Buffer, source: Buffer): void {
  for (let i = 0; i < target.length; i++) target[i]! ^= source[i]!;
}

/** Splits `key` into `stripes` stripes; the result is afMaterialSize bytes, zero-padded. */
export function afSplit(key: Buffer, stripes: number, hash: string): Buffer {
  const size = key.length;
  const material = Buffer.alloc(afMaterialSize(size, stripes));
  randomFillSync(material, 0, size * (stripes - 1));
  const d = Buffer.alloc(size);
  for (let i = 0; i < stripes - 1; i++) {
    xorInto(d, material.subarray(i * size, (i + 1) * size));
    diffuse(d, hash);
  }
  const last = material.subarray((stripes - 1) * size, stripes * size);
  key.copy(last);
  xorInto(last, d);
  return material;
}

/** Recovers the key of `keySize` bytes from split material. */
export function afMerge(material: Buffer, keySize: number, stripes: number, hash: string): Buffer {
  const d = Buffer.alloc(keySize);
  for (let i = 0; i < stripes - 1; i++) {
    xorInto(d, material.subarray(i * keySize, (i + 1) * keySize));
    diffuse(d, hash);
  }
  xorInto(d, material.subarray((stripes - 1) * keySize, stripes * keySize));
  return d;
}
