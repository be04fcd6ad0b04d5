// The LUKS2 binary header (4096 bytes, big-endian) and its checksum, which covers the whole header area of one
// copy: the binary header with the checksum field zeroed, then the JSON area with its zero padding.
import { createHash } from 'node:crypto';
import { LuksFormatError, LuksUnsupportedError } from './errors.js';

export const BINARY_HEADER_SIZE = 4096;
export const MAGIC_PRIMARY = Buffer.from('LUKS\xba\xbe', 'latin1');
export const MAGIC_SECONDARY = Buffer.from('SKUL\xba\xbe', 'latin1');
/** The header area sizes LUKS2 allows: 16 KiB to 4 MiB, powers of two. */
export const HEADER_SIZES = [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000];
const CSUM_OFFSET = 0x1c0;
const CSUM_LENGTH = 64;
const CHECKSUM_HASHES: Record<string, number> = { sha1: 20, sha256: 32, sha512: 64 };

export interface Luks2BinaryHeader {
  secondary: boolean;
  hdrSize: number;
  seqid: bigint;
  label: string;
  checksumAlg: string;
  salt: Buffer;
  uuid: string;
  subsystem: string;
  hdrOffset: number;
}

function cString(buf: Buffer, offset: number, length: number): string {
  const field = buf.subarray(offset, offset + length);
  const end = field.indexOf(0);
  if (end < 0) throw new LuksFormatError(`LUKS2 header string at offset ${offset} is not NUL-terminated`);
  return field.toString('latin1', 0, end);
}

/** Parses the 4096-byte binary header of one copy; `expectedOffset` is where it was read from. */
export function parseBinaryHeader(bytes: Buffer, expectedOffset: number): Luks2BinaryHeader {
  const magic = bytes.subarray(0, 6);
  const secondary = magic.equals(MAGIC_SECONDARY);
  if (!secondary && !magic.equals(MAGIC_PRIMARY)) throw new LuksFormatError(`no LUKS magic at offset ${expectedOffset}`);
  const version = bytes.readUInt16BE(6);
  if (version !== 2) throw new LuksFormatError(`LUKS2 header at offset ${expectedOffset} has version ${version}`);
  const hdrSize = bytes.readBigUInt64BE(8);
  if (!HEADER_SIZES.includes(Number(hdrSize))) throw new LuksFormatError(`LUKS2 header size ${hdrSize} is not one of 16 KiB..4 MiB`);
  const hdrOffset = bytes.readBigUInt64BE(256);
  if (hdrOffset !== BigInt(expectedOffset)) throw new LuksFormatError(`LUKS2 header at offset ${expectedOffset} says it is at ${hdrOffset}`);
  const header: Luks2BinaryHeader = {
    secondary,
    hdrSize: Number(hdrSize),
    seqid: bytes.readBigUInt64BE(16),
    label: cString(bytes, 24, 48),
    checksumAlg: cString(bytes, 72, 32),
    salt: Buffer.from(bytes.subarray(104, 168)),
    uuid: cString(bytes, 168, 40),
    subsystem: cString(bytes, 208, 48),
    hdrOffset: expectedOffset,
  };
  if (!(header.checksumAlg in CHECKSUM_HASHES))
    throw new LuksUnsupportedError(`LUKS2 header checksum ${JSON.stringify(header.checksumAlg)} (supported: sha1, sha256, sha512)`);
  return header;
}

/** The checksum of one copy's header area (binary header + JSON area), with the csum field taken as zero. */
export function headerChecksum(area: Buffer, alg: string): Buffer {
  const hash = createHash(alg);
  hash.update(area.subarray(0, CSUM_OFFSET));
  hash.update(Buffer.alloc(CSUM_LENGTH));
  hash.update(area.subarray(CSUM_OFFSET + CSUM_LENGTH));
  return hash.digest();
}

/** Whether one copy's stored checksum matches its area. */
export function checksumMatches(area: Buffer, alg: string): boolean {
  const stored = area.subarray(CSUM_OFFSET, CSUM_OFFSET + CSUM_LENGTH);
  const computed = headerChecksum(area, alg);
  return stored.subarray(0, computed.length).equals(computed) && stored.subarray(computed.length).every((b) => b === 0);
}

function putString(buf: Buffer, offset: number, length: number, value: string): void {
  const bytes = Buffer.from(value, 'latin1');
  if (bytes.length >= length) throw new LuksFormatError(`LUKS2 header string longer than ${length - 1} bytes`);
  bytes.copy(buf, offset);
}

/** One whole header copy (binary header, JSON, zero padding, sha256 checksum) of `hdrSize` bytes. */
export function encodeHeaderArea(header: Omit<Luks2BinaryHeader, 'checksumAlg'>, json: string): Buffer {
  const area = Buffer.alloc(header.hdrSize);
  (header.secondary ? MAGIC_SECONDARY : MAGIC_PRIMARY).copy(area, 0);
  area.writeUInt16BE(2, 6);
  area.writeBigUInt64BE(BigInt(header.hdrSize), 8);
  area.writeBigUInt64BE(header.seqid, 16);
  putString(area, 24, 48, header.label);
  putString(area, 72, 32, 'sha256');
  header.salt.copy(area, 104, 0, 64);
  putString(area, 168, 40, header.uuid);
  putString(area, 208, 48, header.subsystem);
  area.writeBigUInt64BE(BigInt(header.hdrOffset), 256);
  const jsonBytes = Buffer.from(json, 'utf8');
  if (jsonBytes.length >= header.hdrSize - BINARY_HEADER_SIZE) throw new LuksFormatError('LUKS2 metadata does not fit its JSON area');
  jsonBytes.copy(area, BINARY_HEADER_SIZE);
  headerChecksum(area, 'sha256').copy(area, CSUM_OFFSET);
  return area;
}
