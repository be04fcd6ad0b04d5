// OVMF's GUIDed tables: a table GUID and length, then entries of { GUID, length, payload }, lengths covering
// their own header; the whole table zero-padded to 16 bytes. QEMU's SEV kernel-hashes table uses 16-bit
// lengths, the SEV secret table 32-bit ones.
import { guidBytes, guidText } from './guid.js';

export interface GuidEntry {
  guid: string;
  data: Uint8Array;
}

function entry(guid: string, data: Uint8Array, lengthBytes: 2 | 4): Buffer {
  const length = 16 + lengthBytes + data.length;
  if (length >= 2 ** (8 * lengthBytes)) throw new RangeError(`GUID entry ${guid} of ${data.length} bytes is too long`);
  const len = Buffer.alloc(lengthBytes);
  len.writeUIntLE(length, 0, lengthBytes);
  return Buffer.concat([guidBytes(guid), len, data]);
}

export function buildGuidTable(tableGuid: string, entries: readonly GuidEntry[], lengthBytes: 2 | 4): Buffer {
  const table = entry(tableGuid, Buffer.concat(entries.map((e) => entry(e.guid, e.data, lengthBytes))), lengthBytes);
  const padded = Buffer.alloc(Math.ceil(table.length / 16) * 16);
  table.copy(padded);
  return padded;
}

/** Reads a table back (as the guest's firmware or init would), checking every length against the buffer. */
export function parseGuidTable(bytes: Uint8Array, lengthBytes: 2 | 4): { guid: string; entries: GuidEntry[] } {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const header = 16 + lengthBytes;
  if (b.length < header) throw new RangeError('GUID table shorter than its header');
  const total = b.readUIntLE(16, lengthBytes);
  if (total < header || total > b.length) throw new RangeError(`GUID table length ${total} does not fit ${b.length} bytes`);
  const entries: GuidEntry[] = [];
  for (let at = header; at < total; ) {
    if (total - at < header) throw new RangeError(`truncated GUID entry at offset ${at}`);
    const length = b.readUIntLE(at + 16, lengthBytes);
    if (length < header || at + length > total) throw new RangeError(`GUID entry at offset ${at} has invalid length ${length}`);
    entries.push({ guid: guidText(b.subarray(at, at + 16)), data: Uint8Array.from(b.subarray(at + header, at + length)) });
    at += length;
  }
  return { guid: guidText(b.subarray(0, 16)), entries };
}
