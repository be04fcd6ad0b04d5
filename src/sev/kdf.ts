// NIST SP 800-108 key derivation in counter mode with HMAC-SHA256, as the SEV firmware derives the master
// secret, KEK and KIK: K(i) = HMAC(key, i || label || 0x00 || context || L), i and L (bits) 32-bit little-endian.
import { createHmac } from 'node:crypto';

export function kdf(key: Uint8Array, label: string, context: Uint8Array, bytes: number): Buffer {
  const blocks = Math.ceil(bytes / 32);
  const lengthBits = Buffer.alloc(4);
  lengthBits.writeUInt32LE(bytes * 8);
  const out: Buffer[] = [];
  for (let i = 1; i <= blocks; i++) {
    const counter = Buffer.alloc(4);
    counter.writeUInt32LE(i);
    out.push(createHmac('sha256', key).update(counter).update(label).update(Buffer.of(0)).update(context).update(lengthBits).digest());
  }
  return Buffer.concat(out).subarray(0, bytes);
}

export function hmacSha256(key: Uint8Array, ...parts: Uint8Array[]): Buffer {
  const mac = createHmac('sha256', key);
  for (const p of parts) mac.update(p);
  return mac.digest();
}
