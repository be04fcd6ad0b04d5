// LAUNCH_SECRET packets (AMD SEV API, "LAUNCH_SECRET"): the guest owner, having verified the measurement,
// sends a secret that only this launch can receive.
//   header = FLAGS (u32 LE) || IV[16] || MAC[32]                        (52 bytes)
//   payload = AES-128-CTR(TEK, IV, plaintext)
//   MAC = HMAC-SHA256(TIK, 0x01 || FLAGS || IV || GUEST_LENGTH (u32) || TRANS_LENGTH (u32) || payload || MEASURE)
// MEASURE ties the secret to the measurement the owner verified. The plaintext is usually OVMF's secret table
// (GUID 1e74f542-71dd-4d66-963e-ef4287ff173b) of GUID-named entries, which is what `sevctl secret build` sends.
import { createCipheriv, createDecipheriv, randomBytes, timingSafeEqual } from 'node:crypto';
import { buildGuidTable, parseGuidTable, type GuidEntry } from './guid-table.js';
import { hmacSha256 } from './kdf.js';
import type { TransportKeys } from './session.js';

export const SECRET_HEADER_SIZE = 52;
export const SEV_SECRET_TABLE_GUID = '1e74f542-71dd-4d66-963e-ef4287ff173b';

export interface SecretHeader {
  flags: number;
  iv: Uint8Array;
  mac: Uint8Array;
}

export interface SecretPacket {
  header: Buffer;
  payload: Buffer;
}

export function encodeSecretHeader(h: SecretHeader): Buffer {
  if (h.iv.length !== 16 || h.mac.length !== 32) throw new RangeError('secret header IV is 16 bytes and MAC 32');
  const out = Buffer.alloc(SECRET_HEADER_SIZE);
  out.writeUInt32LE(h.flags >>> 0, 0);
  out.set(h.iv, 4);
  out.set(h.mac, 20);
  return out;
}

export function parseSecretHeader(bytes: Uint8Array): SecretHeader {
  if (bytes.length !== SECRET_HEADER_SIZE) throw new RangeError(`secret header is ${bytes.length} bytes, expected ${SECRET_HEADER_SIZE}`);
  const b = Buffer.from(bytes);
  return { flags: b.readUInt32LE(0), iv: Uint8Array.from(b.subarray(4, 20)), mac: Uint8Array.from(b.subarray(20, 52)) };
}

function secretMac(tik: Uint8Array, flags: number, iv: Uint8Array, guestLength: number, payload: Uint8Array, measure: Uint8Array): Buffer {
  const words = Buffer.alloc(12);
  words.writeUInt32LE(flags >>> 0, 0);
  words.writeUInt32LE(guestLength >>> 0, 4);
  words.writeUInt32LE(payload.length >>> 0, 8);
  return hmacSha256(tik, Buffer.of(0x01), words.subarray(0, 4), iv, words.subarray(4, 12), payload, measure);
}

/** Owner side: encrypts and authenticates `plaintext` for the launch whose MEASURE (32 bytes) the owner verified. */
export function buildSecretPacket(keys: TransportKeys, measure: Uint8Array, plaintext: Uint8Array, iv: Uint8Array = randomBytes(16)): SecretPacket {
  if (measure.length !== 32) throw new RangeError(`MEASURE is 32 bytes, got ${measure.length}`);
  const cipher = createCipheriv('aes-128-ctr', keys.tek, iv);
  const payload = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const flags = 0;
  const mac = secretMac(keys.tik, flags, iv, plaintext.length, payload, measure);
  return { header: encodeSecretHeader({ flags, iv, mac }), payload };
}

export class SecretIntegrityError extends Error {
  override readonly name = 'SecretIntegrityError';
  constructor() {
    super('secret MAC does not verify: wrong TIK, wrong measurement, or altered packet');
  }
}

/** Firmware side: checks the MAC over the packet and the launch's MEASURE, then decrypts. */
export function openSecretPacket(keys: TransportKeys, measure: Uint8Array, header: SecretHeader, payload: Uint8Array, guestLength: number): Buffer {
  const expected = secretMac(keys.tik, header.flags, header.iv, guestLength, payload, measure);
  if (!timingSafeEqual(expected, header.mac)) throw new SecretIntegrityError();
  const decipher = createDecipheriv('aes-128-ctr', keys.tek, header.iv);
  return Buffer.concat([decipher.update(payload), decipher.final()]);
}

/** OVMF's secret table, as `sevctl secret build` lays it out. */
export function buildSecretTable(entries: readonly GuidEntry[]): Buffer {
  return buildGuidTable(SEV_SECRET_TABLE_GUID, entries, 4);
}

export function parseSecretTable(bytes: Uint8Array): GuidEntry[] {
  const table = parseGuidTable(bytes, 4);
  if (table.guid !== SEV_SECRET_TABLE_GUID) throw new RangeError(`not a SEV secret table (GUID ${table.guid})`);
  return table.entries;
}
