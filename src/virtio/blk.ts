// virtio-blk (virtio 1.2 §5.2) over a raw image file. Requests are served synchronously from the
// queue notification, a whole available ring per pass, with one interrupt decision per pass.
import { offsetOf } from '../sys/abi.js';
import {
  VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, VIRTIO_F_VERSION_1, VIRTIO_ID_BLOCK, feature,
  virtioBlkConfig, virtioBlkDiscardWriteZeroes, virtioBlkOuthdr,
} from './abi.js';
import { IoVectors } from '../memory/io-vectors.js';
import { readU64 } from '../memory/u64.js';
import type { DescriptorChain } from './descriptor-chain.js';
import type { ActivatedQueues, DeviceSignals, VirtioDevice } from './device.js';
import { RawImage, SECTOR_SIZE } from './raw-image.js';
import type { Virtqueue } from './virtqueue.js';

export interface VirtioBlkOptions {
  path: string;
  readOnly?: boolean;
  /** Serial number returned by GET_ID (at most 20 bytes); defaults to the image's dev/inode. */
  serial?: string;
  queueSize?: number;
}

const OUTHDR_SIZE = virtioBlkOuthdr.size;
const OUTHDR_TYPE = offsetOf(virtioBlkOuthdr, 'type');
const OUTHDR_SECTOR = offsetOf(virtioBlkOuthdr, 'sector');
const RANGE_SIZE = virtioBlkDiscardWriteZeroes.size;
const RANGE_SECTOR = offsetOf(virtioBlkDiscardWriteZeroes, 'sector');
const RANGE_SECTORS = offsetOf(virtioBlkDiscardWriteZeroes, 'num_sectors');
const RANGE_FLAGS = offsetOf(virtioBlkDiscardWriteZeroes, 'flags');
/** Ranges per DISCARD / WRITE_ZEROES request, and sectors per range (2 GiB). */
const MAX_RANGES = 16;
const MAX_RANGE_SECTORS = 1 << 22;
/** Hole punching works in file-system blocks; tell the guest to discard in 4 KiB units. */
const DISCARD_ALIGNMENT_SECTORS = 4096 / SECTOR_SIZE;

export class VirtioBlk implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_BLOCK;
  readonly features: bigint;
  readonly queueMaxSizes: readonly number[];
  readonly configSize = virtioBlkConfig.size;
  readonly image: RawImage;
  private readonly config: Uint8Array;
  private readonly serial: Uint8Array;
  private readonly header = new Uint8Array(OUTHDR_SIZE);
  private readonly headerView = new DataView(this.header.buffer);
  private readonly status = new Uint8Array(1);
  private signals: DeviceSignals | undefined;
  private queue: Virtqueue | null = null;
  private negotiated = 0n;
  private vectors: IoVectors | undefined;

  constructor(options: VirtioBlkOptions) {
    const queueSize = options.queueSize ?? 256;
    this.image = new RawImage(options.path, options.readOnly ?? false);
    this.queueMaxSizes = [queueSize];
    const ro = this.image.readOnly;
    this.features = feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_BLK_F_SEG_MAX) | feature(VIRTIO_BLK_F_BLK_SIZE) | feature(VIRTIO_BLK_F_FLUSH)
      | (ro ? feature(VIRTIO_BLK_F_RO) : feature(VIRTIO_BLK_F_DISCARD) | feature(VIRTIO_BLK_F_WRITE_ZEROES));
    // GET_ID answers a zero-padded 20-byte field (NUL-terminated when the serial is shorter).
    this.serial = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    this.serial.set(new TextEncoder().encode(options.serial ?? this.image.identity).subarray(0, VIRTIO_BLK_ID_BYTES));
    this.config = new Uint8Array(this.configSize);
    const c = new DataView(this.config.buffer);
    const at = (field: string) => offsetOf(virtioBlkConfig, field);
    c.setBigUint64(at('capacity'), BigInt(this.image.size / SECTOR_SIZE), true);
    // Two descriptors of every request carry the header and the status byte.
    c.setUint32(at('seg_max'), queueSize - 2, true);
    c.setUint32(at('blk_size'), SECTOR_SIZE, true);
    c.setUint32(at('max_discard_sectors'), MAX_RANGE_SECTORS, true);
    c.setUint32(at('max_discard_seg'), MAX_RANGES, true);
    c.setUint32(at('discard_sector_alignment'), DISCARD_ALIGNMENT_SECTORS, true);
    c.setUint32(at('max_write_zeroes_sectors'), MAX_RANGE_SECTORS, true);
    c.setUint32(at('max_write_zeroes_seg'), MAX_RANGES, true);
    c.setUint8(at('write_zeroes_may_unmap'), 1);
  }

  /** Capacity in 512-byte sectors. */
  get sectors(): number {
    return this.image.size / SECTOR_SIZE;
  }

  attach(signals: DeviceSignals): void {
    this.signals = signals;
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }

  writeConfig(): void {
    // Nothing in the block configuration is writable without VIRTIO_BLK_F_CONFIG_WCE.
  }

  activate({ memory, queues, features }: ActivatedQueues): void {
    this.queue = queues[0] ?? null;
    this.negotiated = features;
    // Data moves between the file and guest RAM in one preadv/pwritev by host address where RAM is an
    // mmap (a chain with more segments than IOV_MAX, or RAM in SharedArrayBuffers, goes through views).
    this.vectors = memory.hostMapped ? new IoVectors() : undefined;
  }

  reset(): void {
    this.queue = null;
  }

  /** Closes the image file; the device is unusable afterwards. */
  close(): void {
    this.reset();
    this.image.close();
  }

  queueNotify(): void {
    const q = this.queue;
    if (!q) return;
    for (;;) {
      q.disableNotification();
      for (let chain = q.pop(); chain; chain = q.pop()) q.addUsed(chain.head, this.serve(chain));
      if (!q.enableNotification()) break;
    }
    if (q.needsInterrupt()) this.signals?.usedBuffers();
  }

  /** Serves one request; returns the number of bytes written to the driver's buffers. */
  private serve(chain: DescriptorChain): number {
    // Without a writable byte there is nowhere to put a status: return the chain untouched.
    if (chain.writableLength === 0) return 0;
    const statusAt = chain.writableLength - 1;
    let written = 0;
    let status: number;
    try {
      if (chain.read(0, this.header) < OUTHDR_SIZE) {
        status = VIRTIO_BLK_S_IOERR;
      } else {
        const type = this.headerView.getUint32(OUTHDR_TYPE, true);
        // A sector from 2^53 on is beyond any disk: -1 fails the bounds check of every transfer.
        const sector = readU64(this.headerView, OUTHDR_SECTOR) ?? -1;
        [status, written] = this.request(chain, type, sector, statusAt);
      }
    } catch {
      // A host I/O failure (EIO, ENOSPC, ...) is the guest's I/O error, not the VMM's.
      status = VIRTIO_BLK_S_IOERR;
      written = 0;
    }
    this.status[0] = status;
    chain.write(statusAt, this.status);
    return written + 1;
  }

  /** Returns [status, bytes of data written to the driver]. */
  private request(chain: DescriptorChain, type: number, sector: number, dataLength: number): [number, number] {
    switch (type) {
      case VIRTIO_BLK_T_IN: {
        if (!this.inBounds(sector, dataLength)) return [VIRTIO_BLK_S_IOERR, 0];
        this.transfer(chain, true, 0, dataLength, sector * SECTOR_SIZE);
        return [VIRTIO_BLK_S_OK, dataLength];
      }
      case VIRTIO_BLK_T_OUT: {
        const length = chain.readableLength - OUTHDR_SIZE;
        if (this.image.readOnly || !this.inBounds(sector, length)) return [VIRTIO_BLK_S_IOERR, 0];
        this.transfer(chain, false, OUTHDR_SIZE, length, sector * SECTOR_SIZE);
        return [VIRTIO_BLK_S_OK, 0];
      }
      case VIRTIO_BLK_T_FLUSH:
        this.image.flush();
        return [VIRTIO_BLK_S_OK, 0];
      case VIRTIO_BLK_T_GET_ID: {
        return [VIRTIO_BLK_S_OK, chain.write(0, this.serial.subarray(0, Math.min(dataLength, VIRTIO_BLK_ID_BYTES)))];
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return [this.ranges(chain, type), 0];
      default:
        return [VIRTIO_BLK_S_UNSUPP, 0];
    }
  }

  /** Moves `length` bytes from `offset` in the chain's writable (IN) or readable (OUT) buffers. */
  private transfer(chain: DescriptorChain, toGuest: boolean, offset: number, length: number, position: number): void {
    const vectors = this.vectors;
    // Data in several buffers: one preadv/pwritev by host address. In one (or where RAM has no host
    // address): pread/pwrite on views, Node's binding costing less than a foreign call.
    if (vectors && chain.addressOf(toGuest, offset, length) === undefined && chain.ioVectors(toGuest, offset, length, vectors)) {
      if (toGuest) this.image.readVectors(vectors, position);
      else this.image.writeVectors(vectors, position);
    } else if (toGuest) {
      this.image.read(chain.writableViews(offset, length), position);
    } else {
      this.image.write(chain.readableViews(offset, length), position);
    }
  }

  private ranges(chain: DescriptorChain, type: number): number {
    const discard = type === VIRTIO_BLK_T_DISCARD;
    if (!(this.negotiated & feature(discard ? VIRTIO_BLK_F_DISCARD : VIRTIO_BLK_F_WRITE_ZEROES))) return VIRTIO_BLK_S_UNSUPP;
    if (this.image.readOnly) return VIRTIO_BLK_S_IOERR;
    const length = chain.readableLength - OUTHDR_SIZE;
    if (length === 0 || length % RANGE_SIZE !== 0 || length / RANGE_SIZE > MAX_RANGES) return VIRTIO_BLK_S_IOERR;
    const bytes = new Uint8Array(length);
    chain.read(OUTHDR_SIZE, bytes);
    const view = new DataView(bytes.buffer);
    const ranges: { sector: number; count: number; unmap: boolean }[] = [];
    for (let at = 0; at < length; at += RANGE_SIZE) {
      const sector = readU64(view, at + RANGE_SECTOR) ?? -1;
      const count = view.getUint32(at + RANGE_SECTORS, true);
      const flags = view.getUint32(at + RANGE_FLAGS, true);
      // §5.2.6.2: UNMAP is meaningless for DISCARD, and no other flag exists.
      if (discard ? flags !== 0 : (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0) return VIRTIO_BLK_S_UNSUPP;
      if (count > MAX_RANGE_SECTORS || !this.inBounds(sector, count * SECTOR_SIZE)) return VIRTIO_BLK_S_IOERR;
      ranges.push({ sector, count, unmap: (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 });
    }
    for (const r of ranges) {
      if (discard) this.image.discard(r.sector * SECTOR_SIZE, r.count * SECTOR_SIZE);
      else this.image.writeZeroes(r.sector * SECTOR_SIZE, r.count * SECTOR_SIZE, r.unmap);
    }
    return VIRTIO_BLK_S_OK;
  }

  /** A transfer of `length` bytes at `sector` is whole sectors and lies inside the disk. */
  private inBounds(sector: number, length: number): boolean {
    return length % SECTOR_SIZE === 0 && sector >= 0 && sector <= this.sectors && length / SECTOR_SIZE <= this.sectors - sector;
  }
}
