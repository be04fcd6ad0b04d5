// Test-only: images written by the writer, and edits to their JSON metadata that keep both header checksums
// valid, so that the reader's metadata checks (not only its checksum check) meet hostile input.
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import type { KdfLimits } from '../../src/luks/kdf.js';
import { encodeHeaderArea, parseBinaryHeader } from '../../src/luks/luks2-header.js';
import { writeLuks2 } from '../../src/luks/writer.js';
import type { Scratch } from './cryptsetup.js';

/** Limits small enough that no mutated header can make a test slow. */
export const TEST_LIMITS: KdfLimits = { maxPbkdf2Iterations: 200_000, maxArgon2MemoryKiB: 64 * 1024, maxArgon2Time: 8, maxArgon2Cpus: 4 };

export interface Sample {
  image: string;
  plaintext: Buffer;
  passphrase: Buffer;
  bytes: Buffer;
}

/** A small attached-header image (data at 288 KiB) with a PBKDF2 keyslot. */
export async function sampleImage(scratch: Scratch, name: string, size = 5 * 4096): Promise<Sample> {
  const plaintext = randomBytes(size);
  const passphrase = Buffer.from(`passphrase of ${name}`);
  const image = scratch.file(name);
  writeFileSync(`${image}.plain`, plaintext);
  await writeLuks2({ output: image, source: `${image}.plain`, passphrase, kdf: { type: 'pbkdf2', iterations: 1000 }, dataOffset: 294912 });
  return { image, plaintext, passphrase, bytes: readFileSync(image) };
}

// biome-ignore lint/suspicious/noExplicitAny: tests reach into arbitrary paths of the header's JSON to damage it.
export type Metadata = Record<string, any>;

/** The JSON metadata of an image's primary header. */
export function metadataOf(bytes: Buffer): Metadata {
  const area = bytes.subarray(4096, parseBinaryHeader(bytes.subarray(0, 4096), 0).hdrSize);
  return JSON.parse(area.toString('utf8', 0, area.indexOf(0))) as Metadata;
}

/** A copy of the image whose two header copies carry `json` (raw text), with valid checksums. */
export function withJsonText(bytes: Buffer, json: string): Buffer {
  const out = Buffer.from(bytes);
  const primary = parseBinaryHeader(bytes.subarray(0, 4096), 0);
  const { hdrSize } = primary;
  const secondary = parseBinaryHeader(bytes.subarray(hdrSize, hdrSize + 4096), hdrSize);
  for (const h of [primary, secondary]) encodeHeaderArea(h, json).copy(out, h.hdrOffset);
  return out;
}

export function withMetadata(bytes: Buffer, edit: (m: Metadata) => void): Buffer {
  const metadata = metadataOf(bytes);
  edit(metadata);
  return withJsonText(bytes, JSON.stringify(metadata));
}
