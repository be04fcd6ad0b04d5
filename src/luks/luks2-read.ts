// Finding the LUKS2 header copy to trust: both copies are checked (magic, offset, size, checksum over the whole
// header area) and the valid one with the higher seqid wins, as cryptsetup does, but nothing is ever repaired.
import type { FileHandle } from 'node:fs/promises';
import { LuksFormatError } from './errors.js';
import { BINARY_HEADER_SIZE, HEADER_SIZES, checksumMatches, parseBinaryHeader, type Luks2BinaryHeader } from './luks2-header.js';
import { parseMetadata, type Luks2Metadata } from './luks2-metadata.js';

export interface Luks2Header {
  binary: Luks2BinaryHeader;
  metadata: Luks2Metadata;
  /** What each copy looked like: the dump shows it, and a damaged copy is not silently accepted unnoticed. */
  copies: { offset: number; state: string }[];
}

export async function readExactly(file: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await file.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw new LuksFormatError(`image ends at ${position + done}, before ${position + length}`);
    done += bytesRead;
  }
  return buf;
}

interface Copy {
  binary: Luks2BinaryHeader;
  area: Buffer;
}

async function readCopy(file: FileHandle, fileSize: number, offset: number): Promise<Copy> {
  if (offset + BINARY_HEADER_SIZE > fileSize) throw new LuksFormatError(`image too small for a header at ${offset}`);
  const binary = parseBinaryHeader(await readExactly(file, offset, BINARY_HEADER_SIZE), offset);
  if (offset + binary.hdrSize > fileSize) throw new LuksFormatError(`image too small for the header area at ${offset}`);
  const area = await readExactly(file, offset, binary.hdrSize);
  if (!checksumMatches(area, binary.checksumAlg)) throw new LuksFormatError(`header checksum mismatch at offset ${offset}`);
  return { binary, area };
}

const describeFailure = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** Reads and validates the LUKS2 header of an image whose first bytes carry the LUKS magic with version 2. */
export async function readLuks2Header(file: FileHandle, fileSize: number): Promise<Luks2Header> {
  const copies: { offset: number; state: string }[] = [];
  const valid: Copy[] = [];
  let primarySize: number | undefined;
  try {
    const primary = await readCopy(file, fileSize, 0);
    primarySize = primary.binary.hdrSize;
    if (primary.binary.secondary) throw new LuksFormatError('secondary magic at offset 0');
    valid.push(primary);
    copies.push({ offset: 0, state: 'ok' });
  } catch (e) {
    if (!(e instanceof LuksFormatError)) throw e;
    copies.push({ offset: 0, state: describeFailure(e) });
  }
  // The secondary copy sits right after the primary; with the primary unreadable, at one of the allowed sizes.
  for (const offset of primarySize !== undefined ? [primarySize] : HEADER_SIZES) {
    try {
      const secondary = await readCopy(file, fileSize, offset);
      if (!secondary.binary.secondary || secondary.binary.hdrSize !== offset) throw new LuksFormatError(`no secondary header at ${offset}`);
      valid.push(secondary);
      copies.push({ offset, state: 'ok' });
      break;
    } catch (e) {
      if (!(e instanceof LuksFormatError)) throw e;
      if (primarySize !== undefined) copies.push({ offset, state: describeFailure(e) });
    }
  }
  if (valid.length === 0) throw new LuksFormatError(`no valid LUKS2 header copy (${copies[0]!.state})`);
  const [first, second] = valid;
  if (second && (first!.binary.uuid !== second.binary.uuid || first!.binary.hdrSize !== second.binary.hdrSize)) {
    throw new LuksFormatError('the two LUKS2 header copies disagree on uuid or size');
  }
  const chosen = second && second.binary.seqid > first!.binary.seqid ? second : first!;
  const jsonArea = chosen.area.subarray(BINARY_HEADER_SIZE);
  const end = jsonArea.indexOf(0);
  if (end < 0) throw new LuksFormatError('LUKS2 metadata is not NUL-terminated');
  const metadata = parseMetadata(jsonArea.toString('utf8', 0, end), chosen.binary.hdrSize);
  if (2 * chosen.binary.hdrSize + metadata.keyslotsSize > fileSize) throw new LuksFormatError('header file is smaller than its keyslots area');
  return { binary: chosen.binary, metadata, copies };
}
