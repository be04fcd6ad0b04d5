// One virtio-blk request (virtio 1.2 §5.2.6) parsed without touching the image: from the header, the
// chain's shape and (for DISCARD / WRITE_ZEROES) its range list to a typed request whose every byte
// range lies inside the disk and the chain, or to the status that refuses it. Nothing is executed
// until the whole request is known to be valid, so a request is carried out whole or not at all.
import { offsetOf } from '../sys/abi.js';
import {
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  virtioBlkDiscardWriteZeroes,
  virtioBlkOuthdr,
} from './abi.js';
import { readU64 } from '../memory/u64.js';
import { SECTOR_SIZE } from './raw-image.js';

export const OUTHDR_SIZE = virtioBlkOuthdr.size;
const OUTHDR_TYPE = offsetOf(virtioBlkOuthdr, 'type');
const OUTHDR_SECTOR = offsetOf(virtioBlkOuthdr, 'sector');
const RANGE_SIZE = virtioBlkDiscardWriteZeroes.size;
const RANGE_SECTOR = offsetOf(virtioBlkDiscardWriteZeroes, 'sector');
const RANGE_SECTORS = offsetOf(virtioBlkDiscardWriteZeroes, 'num_sectors');
const RANGE_FLAGS = offsetOf(virtioBlkDiscardWriteZeroes, 'flags');
/** Ranges per DISCARD / WRITE_ZEROES request, and sectors per range (2 GiB). */
export const MAX_RANGES = 16;
export const MAX_RANGE_SECTORS = 1 << 22;

/** What the parser needs to know of the disk and of what the driver negotiated. */
export interface BlkDisk {
  /** Capacity in sectors. */
  readonly sectors: number;
  readonly readOnly: boolean;
  readonly discard: boolean;
  readonly writeZeroes: boolean;
}

/**
 * The request's chain as the parser sees it (a DescriptorChain): its lengths, and its readable bytes,
 * which are copied once (the guest may change them meanwhile): the range list, at most 256 bytes.
 */
export interface BlkChain {
  readonly readableLength: number;
  readonly writableLength: number;
  read(offset: number, into: Uint8Array): number;
}

/** A byte range of the image. */
export interface ImageRange {
  readonly position: number;
  readonly length: number;
}

/**
 * IN fills the chain's writable bytes from 0 (the status byte comes after them); OUT takes its data
 * from the readable bytes after the header.
 */
export type BlkRequest =
  | { readonly type: 'in'; readonly position: number; readonly length: number }
  | { readonly type: 'out'; readonly position: number; readonly length: number }
  | { readonly type: 'flush' }
  | { readonly type: 'get-id'; readonly length: number }
  | { readonly type: 'discard'; readonly ranges: readonly ImageRange[] }
  | { readonly type: 'write-zeroes'; readonly ranges: readonly (ImageRange & { readonly unmap: boolean })[] };

/** A request the device refuses with `status` without touching the image. */
export interface BlkRefusal {
  readonly type: 'refused';
  readonly status: number;
  readonly reason: string;
}

/** What a chain asks for: a request, a refusal, or nothing at all when it has no writable byte for a status. */
export type BlkParse = BlkRequest | BlkRefusal | { readonly type: 'no-status' };

const NO_STATUS: BlkParse = { type: 'no-status' };
const FLUSH: BlkParse = { type: 'flush' };
const refused = (status: number, reason: string): BlkRefusal => ({ type: 'refused', status, reason });

/**
 * Parses the request `chain` carries, whose header (its first OUTHDR_SIZE readable bytes) the caller
 * copied into `header`: one copy of the header whatever the chain's framing.
 */
export function parseBlkRequest(header: DataView, chain: BlkChain, disk: BlkDisk): BlkParse {
  if (chain.writableLength === 0) return NO_STATUS;
  if (chain.readableLength < OUTHDR_SIZE) return refused(VIRTIO_BLK_S_IOERR, `header of ${chain.readableLength} bytes`);
  const type = header.getUint32(OUTHDR_TYPE, true);
  const sector = readU64(header, OUTHDR_SECTOR);
  // The status byte is the last writable byte; what the driver gave before it is room for data.
  const inLength = chain.writableLength - 1;
  switch (type) {
    case VIRTIO_BLK_T_IN: {
      const position = imagePosition(disk, sector, inLength);
      return position === undefined ? refused(VIRTIO_BLK_S_IOERR, 'read outside the disk') : { type: 'in', position, length: inLength };
    }
    case VIRTIO_BLK_T_OUT: {
      if (disk.readOnly) return refused(VIRTIO_BLK_S_IOERR, 'write to a read-only disk');
      const length = chain.readableLength - OUTHDR_SIZE;
      const position = imagePosition(disk, sector, length);
      return position === undefined ? refused(VIRTIO_BLK_S_IOERR, 'write outside the disk') : { type: 'out', position, length };
    }
    case VIRTIO_BLK_T_FLUSH:
      return FLUSH;
    case VIRTIO_BLK_T_GET_ID:
      return { type: 'get-id', length: Math.min(inLength, VIRTIO_BLK_ID_BYTES) };
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
      return parseRanges(chain, disk, type === VIRTIO_BLK_T_DISCARD);
    default:
      return refused(VIRTIO_BLK_S_UNSUPP, `request type ${type}`);
  }
}

function parseRanges(chain: BlkChain, disk: BlkDisk, discard: boolean): BlkParse {
  if (!(discard ? disk.discard : disk.writeZeroes)) return refused(VIRTIO_BLK_S_UNSUPP, `${discard ? 'DISCARD' : 'WRITE_ZEROES'} not negotiated`);
  if (disk.readOnly) return refused(VIRTIO_BLK_S_IOERR, 'a read-only disk');
  const length = chain.readableLength - OUTHDR_SIZE;
  if (length === 0 || length % RANGE_SIZE !== 0 || length / RANGE_SIZE > MAX_RANGES) return refused(VIRTIO_BLK_S_IOERR, `range list of ${length} bytes`);
  const bytes = new Uint8Array(length);
  chain.read(OUTHDR_SIZE, bytes);
  const view = new DataView(bytes.buffer);
  const ranges: { position: number; length: number; unmap: boolean }[] = [];
  for (let at = 0; at < length; at += RANGE_SIZE) {
    const count = view.getUint32(at + RANGE_SECTORS, true);
    const flags = view.getUint32(at + RANGE_FLAGS, true);
    // §5.2.6.2: UNMAP is meaningless for DISCARD, and no other flag exists.
    if (discard ? flags !== 0 : (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0) return refused(VIRTIO_BLK_S_UNSUPP, `range flags 0x${flags.toString(16)}`);
    if (count === 0 || count > MAX_RANGE_SECTORS) return refused(VIRTIO_BLK_S_IOERR, `range of ${count} sectors`);
    const position = imagePosition(disk, readU64(view, at + RANGE_SECTOR), count * SECTOR_SIZE);
    if (position === undefined) return refused(VIRTIO_BLK_S_IOERR, 'range outside the disk');
    ranges.push({ position, length: count * SECTOR_SIZE, unmap: (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 });
  }
  return discard ? { type: 'discard', ranges } : { type: 'write-zeroes', ranges };
}

/** The byte position of `length` bytes at `sector` when they are whole sectors inside the disk. */
function imagePosition(disk: BlkDisk, sector: number | undefined, length: number): number | undefined {
  if (sector === undefined || length < 0 || length % SECTOR_SIZE !== 0) return undefined;
  return sector <= disk.sectors && length / SECTOR_SIZE <= disk.sectors - sector ? sector * SECTOR_SIZE : undefined;
}
