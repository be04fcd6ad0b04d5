// virtio-blk (virtio 1.2 §5.2) over a raw image file. Requests are served synchronously from the
// queue notification, up to a budget per pass, with one interrupt decision per pass. Each request is
// parsed whole (blk-request.ts) before any of it is carried out.
import { offsetOf } from '../sys/abi.js';
import {
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_BLOCK,
  feature,
  virtioBlkConfig,
} from './abi.js';
import { IoVectors } from '../memory/io-vectors.js';
import { type BlkDisk, type BlkRequest, MAX_RANGES, MAX_RANGE_SECTORS, OUTHDR_SIZE, parseBlkRequest } from './blk-request.js';
import type { DescriptorChain } from './descriptor-chain.js';
import type { ActivatedQueues, DeviceSignals, VirtioDevice } from './device.js';
import { RawImage, SECTOR_SIZE, isImageIoError } from './raw-image.js';
import type { Virtqueue } from './virtqueue.js';

export interface VirtioBlkOptions {
  path: string;
  readOnly?: boolean;
  /** Serial number returned by GET_ID (at most 20 bytes); defaults to the image's dev/inode. */
  serial?: string;
  queueSize?: number;
}

/**
 * Work per pass over the ring (vhost-blk's weight idea): after this many requests or bytes the device
 * yields and serves the rest on a later pass, so a guest that keeps refilling its ring cannot hold
 * the thread (and its control channel) for ever. A full default ring, and 64 MiB.
 */
export const REQUESTS_PER_PASS = 256;
export const BYTES_PER_PASS = 64 << 20;
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
  private disk: BlkDisk;
  private vectors: IoVectors | undefined;
  /** Long work (zeroing by writing) goes on while no reset waits for this device's thread. */
  private readonly keepGoing = (): boolean => !this.signals?.stopRequested();

  constructor(options: VirtioBlkOptions) {
    const queueSize = options.queueSize ?? 256;
    this.image = new RawImage(options.path, options.readOnly ?? false);
    this.queueMaxSizes = [queueSize];
    const ro = this.image.readOnly;
    this.features =
      feature(VIRTIO_F_VERSION_1) |
      feature(VIRTIO_BLK_F_SEG_MAX) |
      feature(VIRTIO_BLK_F_BLK_SIZE) |
      feature(VIRTIO_BLK_F_FLUSH) |
      (ro ? feature(VIRTIO_BLK_F_RO) : feature(VIRTIO_BLK_F_DISCARD) | feature(VIRTIO_BLK_F_WRITE_ZEROES));
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
    this.disk = { sectors: this.sectors, readOnly: ro, discard: false, writeZeroes: false };
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
    this.disk = {
      sectors: this.sectors,
      readOnly: this.image.readOnly,
      discard: (features & feature(VIRTIO_BLK_F_DISCARD)) !== 0n,
      writeZeroes: (features & feature(VIRTIO_BLK_F_WRITE_ZEROES)) !== 0n,
    };
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
    let requests = 0;
    let bytes = 0;
    pass: for (;;) {
      q.disableNotification();
      for (let chain = q.pop(); chain; chain = q.pop()) {
        const written = this.serve(chain);
        // A reset is waiting and cut the request short: the queue is about to go away.
        if (written === undefined) return;
        q.addUsed(chain.head, written);
        bytes += chain.readableLength + chain.writableLength;
        // A guest that keeps refilling the ring must not hold the thread: the rest waits for a later pass.
        if (++requests === REQUESTS_PER_PASS || bytes >= BYTES_PER_PASS) {
          this.signals?.defer(0);
          break pass;
        }
      }
      if (!q.enableNotification()) break;
    }
    if (q.needsInterrupt()) this.signals?.usedBuffers();
  }

  /**
   * Serves one request; returns the number of bytes written to the driver's buffers, or undefined when
   * a waiting reset stopped it before it completed.
   */
  private serve(chain: DescriptorChain): number | undefined {
    chain.read(0, this.header);
    const parsed = parseBlkRequest(this.headerView, chain, this.disk);
    if (parsed.type === 'no-status') return 0;
    let status: number = VIRTIO_BLK_S_OK;
    let written = 0;
    if (parsed.type === 'refused') {
      status = parsed.status;
    } else {
      try {
        const done = this.execute(chain, parsed);
        if (done === undefined) return undefined;
        written = done;
      } catch (e) {
        // The image's own failure (EIO, ENOSPC, a file cut short) is the guest's I/O error; anything
        // else is a fault of the VMM, which the transport turns into DEVICE_NEEDS_RESET.
        if (!isImageIoError(e)) throw e;
        status = VIRTIO_BLK_S_IOERR;
      }
    }
    this.status[0] = status;
    chain.write(chain.writableLength - 1, this.status);
    return written + 1;
  }

  /** Carries out a valid request; returns the bytes of data written to the driver, or undefined if stopped. */
  private execute(chain: DescriptorChain, request: BlkRequest): number | undefined {
    switch (request.type) {
      case 'in':
        this.transfer(chain, true, 0, request.length, request.position);
        return request.length;
      case 'out':
        this.transfer(chain, false, OUTHDR_SIZE, request.length, request.position);
        return 0;
      case 'flush':
        this.image.flush();
        return 0;
      case 'get-id':
        return chain.write(0, this.serial.subarray(0, request.length));
      case 'discard':
        for (const r of request.ranges) if (!this.image.discard(r.position, r.length, this.keepGoing)) return undefined;
        return 0;
      case 'write-zeroes':
        for (const r of request.ranges) if (!this.image.writeZeroes(r.position, r.length, r.unmap, this.keepGoing)) return undefined;
        return 0;
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
}
