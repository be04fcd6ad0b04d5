import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_ID_BLOCK,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  feature,
} from '../../src/virtio/abi.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { SysError } from '../../src/sys/sys.js';
import { REQUESTS_PER_PASS, VirtioBlk } from '../../src/virtio/blk.js';
import { VirtioMmioTransport } from '../../src/virtio/mmio.js';
import { type BlkFixture, blkFixture, prepare, submit, tempImage } from './blk-fixture.js';
import { InterruptCounter, TestDriver } from './driver.js';
import { RefillingBlk } from './refilling-blk.js';

function ranges(...rs: { sector: number; count: number; flags?: number }[]): Uint8Array {
  const b = new Uint8Array(16 * rs.length);
  const v = new DataView(b.buffer);
  rs.forEach((r, i) => {
    v.setBigUint64(16 * i, BigInt(r.sector), true);
    v.setUint32(16 * i + 8, r.count, true);
    v.setUint32(16 * i + 12, r.flags ?? 0, true);
  });
  return b;
}

describe('virtio-blk', () => {
  let f: BlkFixture;
  afterEach(() => f?.close());

  it('is a block device whose capacity is the image size in sectors', () => {
    f = blkFixture({ image: 3 << 20 });
    expect(f.driver.read(VIRTIO_MMIO_DEVICE_ID)).to.equal(VIRTIO_ID_BLOCK);
    expect(f.driver.readConfig(0, 8)).to.equal(BigInt((3 << 20) / 512));
    expect(f.driver.readConfig(12, 4)).to.equal(254n); // seg_max = largest queue size - 2
    expect(f.driver.readConfig(20, 4)).to.equal(512n); // blk_size
  });

  it('offers FLUSH, SEG_MAX, BLK_SIZE, DISCARD, WRITE_ZEROES, EVENT_IDX and INDIRECT_DESC, and RO only for read-only disks', () => {
    f = blkFixture();
    const rw = f.driver.deviceFeatures();
    for (const bit of [VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, 2, 6, 32]) {
      expect(rw & feature(bit), `bit ${bit}`).to.not.equal(0n);
    }
    expect(rw & feature(VIRTIO_BLK_F_RO)).to.equal(0n);
    f.close();
    f = blkFixture({ readOnly: true });
    expect(f.driver.deviceFeatures() & feature(VIRTIO_BLK_F_RO)).to.not.equal(0n);
  });

  it('refuses an image whose size is not a multiple of 512 bytes, naming it', () => {
    const file = tempImage(1000);
    expect(() => new VirtioBlk({ path: file })).to.throw(/1000 bytes, not a multiple of 512/);
  });

  it('reads what is in the image (IN)', () => {
    const image = randomBytes(1 << 20);
    f = blkFixture({ image });
    const r = submit(f, { type: VIRTIO_BLK_T_IN, sector: 8, inLength: 8192 });
    expect(r.status).to.equal(VIRTIO_BLK_S_OK);
    expect(r.len).to.equal(8193);
    expect(Buffer.from(r.data).equals(image.subarray(4096, 4096 + 8192))).to.equal(true);
  });

  it('writes to the image (OUT) and the data is in the host file after FLUSH', () => {
    f = blkFixture();
    const data = randomBytes(4096);
    expect(submit(f, { type: VIRTIO_BLK_T_OUT, sector: 100, out: data }).status).to.equal(VIRTIO_BLK_S_OK);
    const flush = submit(f, { type: VIRTIO_BLK_T_FLUSH });
    expect(flush.status).to.equal(VIRTIO_BLK_S_OK);
    expect(flush.len).to.equal(1);
    const onDisk = fs.readFileSync(f.file).subarray(100 * 512, 100 * 512 + 4096);
    expect(onDisk.equals(data)).to.equal(true);
  });

  it('handles a request split across arbitrary descriptors (no framing assumptions)', () => {
    const image = randomBytes(1 << 20);
    f = blkFixture({ image });
    const heap = f.driver.heap;
    const hdr = heap.alloc(16);
    f.memory.writeU32(hdr, VIRTIO_BLK_T_IN);
    f.memory.writeU64(hdr + 8, 2n);
    // Header in two pieces, data in three, the status byte sharing the last data buffer.
    const a = heap.alloc(100);
    const b = heap.alloc(412);
    const c = heap.alloc(513);
    const head = f.queue.chain([
      { address: hdr, length: 5 },
      { address: hdr + 5, length: 11 },
      { address: a, length: 100, writable: true },
      { address: b, length: 412, writable: true },
      { address: c, length: 513, writable: true },
    ]);
    f.queue.submit(head);
    expect(f.queue.takeUsed()).to.deep.equal([{ id: head, len: 1025 }]);
    const got = Buffer.concat([f.memory.read(a, 100), f.memory.read(b, 412), f.memory.read(c, 512)]);
    expect(got.equals(image.subarray(1024, 2048))).to.equal(true);
    expect(f.memory.readU8(c + 512)).to.equal(VIRTIO_BLK_S_OK);
  });

  for (const [memory, segments] of [
    ['mmap', 3],
    ['mmap', 1100],
    ['shared', 3],
    ['shared', 1100],
  ] as const) {
    // Past IOV_MAX (1024) segments a transfer cannot be one preadv/pwritev by host vectors.
    it(`moves data both ways through ${segments} scattered segments on ${memory === 'mmap' ? "mmap'ed guest RAM" : 'guest RAM in SharedArrayBuffers'}`, () => {
      const image = randomBytes(1 << 20);
      f = blkFixture({ image, memory, queueSize: 2048, maxQueueSize: 2048 });
      const heap = f.driver.heap;
      // Segments of 512 bytes with a gap after each, so no two are adjacent in guest RAM.
      const pieces = Array.from({ length: segments }, () => heap.alloc(1024, 512));
      const transfer = (type: number, writable: boolean): number => {
        const hdr = heap.alloc(16);
        f.memory.writeU32(hdr, type);
        f.memory.writeU64(hdr + 8, 16n);
        const status = heap.alloc(1, 1);
        const head = f.queue.chain([
          { address: hdr, length: 16 },
          ...pieces.map((address) => ({ address, length: 512, writable })),
          { address: status, length: 1, writable: true },
        ]);
        f.queue.submit(head);
        expect(f.queue.takeUsed()).to.deep.equal([{ id: head, len: (writable ? 512 * segments : 0) + 1 }]);
        return f.memory.readU8(status);
      };
      const data = randomBytes(512 * segments);
      for (const [i, address] of pieces.entries()) f.memory.write(address, data.subarray(512 * i, 512 * (i + 1)));
      expect(transfer(VIRTIO_BLK_T_OUT, false)).to.equal(VIRTIO_BLK_S_OK);
      expect(
        fs
          .readFileSync(f.file)
          .subarray(8192, 8192 + data.length)
          .equals(data),
      ).to.equal(true);
      for (const address of pieces) f.memory.fill(address, 512, 0);
      expect(transfer(VIRTIO_BLK_T_IN, true)).to.equal(VIRTIO_BLK_S_OK);
      expect(Buffer.concat(pieces.map((address) => f.memory.read(address, 512))).equals(data)).to.equal(true);
      expect(image.subarray(0, 8192).equals(fs.readFileSync(f.file).subarray(0, 8192)), 'bytes before the transfer untouched').to.equal(true);
    });
  }

  it('serves requests laid out in indirect tables', () => {
    const image = randomBytes(1 << 20);
    f = blkFixture({ image });
    const r = submit(f, { type: VIRTIO_BLK_T_IN, sector: 1, inLength: 512 }, true);
    expect(r.status).to.equal(VIRTIO_BLK_S_OK);
    expect(Buffer.from(r.data).equals(image.subarray(512, 1024))).to.equal(true);
  });

  it('refuses writes, discards and zeroing on a read-only disk with an I/O error, and still reads', () => {
    const image = randomBytes(1 << 20);
    f = blkFixture({ image, readOnly: true });
    expect(submit(f, { type: VIRTIO_BLK_T_OUT, sector: 0, out: new Uint8Array(512) }).status).to.equal(VIRTIO_BLK_S_IOERR);
    expect(submit(f, { type: VIRTIO_BLK_T_WRITE_ZEROES, out: ranges({ sector: 0, count: 8 }) }).status).to.not.equal(VIRTIO_BLK_S_OK);
    expect(fs.readFileSync(f.file).equals(image)).to.equal(true);
    expect(submit(f, { type: VIRTIO_BLK_T_IN, sector: 0, inLength: 512 }).status).to.equal(VIRTIO_BLK_S_OK);
  });

  it('rejects transfers past the end of the disk or not in whole sectors', () => {
    f = blkFixture({ image: 1 << 20 });
    const sectors = (1 << 20) / 512;
    expect(submit(f, { type: VIRTIO_BLK_T_IN, sector: sectors - 1, inLength: 1024 }).status).to.equal(VIRTIO_BLK_S_IOERR);
    expect(submit(f, { type: VIRTIO_BLK_T_IN, sector: sectors - 1, inLength: 512 }).status).to.equal(VIRTIO_BLK_S_OK);
    expect(submit(f, { type: VIRTIO_BLK_T_OUT, sector: sectors, out: new Uint8Array(512) }).status).to.equal(VIRTIO_BLK_S_IOERR);
    expect(submit(f, { type: VIRTIO_BLK_T_OUT, sector: 2 ** 53 - 1, out: new Uint8Array(512) }).status).to.equal(VIRTIO_BLK_S_IOERR);
    expect(submit(f, { type: VIRTIO_BLK_T_IN, sector: 0, inLength: 100 }).status).to.equal(VIRTIO_BLK_S_IOERR);
    // A sector number with the high word set, beyond any safe integer.
    const p = prepare(f, { type: VIRTIO_BLK_T_IN, inLength: 512 });
    f.memory.writeU64(p.header + 8, 0xffff_ffff_ffff_fff0n);
    f.queue.submit(p.head);
    f.queue.takeUsed();
    expect(f.memory.readU8(p.status)).to.equal(VIRTIO_BLK_S_IOERR);
  });

  it('answers GET_ID with the serial, zero padded to 20 bytes', () => {
    f = blkFixture();
    const r = submit(f, { type: VIRTIO_BLK_T_GET_ID, inLength: 20 });
    expect(r.status).to.equal(VIRTIO_BLK_S_OK);
    expect(Buffer.from(r.data).toString('latin1')).to.equal('ts-vmm-test-disk\0\0\0\0');
    expect(r.len).to.equal(21);
  });

  it('answers an unknown request type with UNSUPP', () => {
    f = blkFixture();
    expect(submit(f, { type: 0x1234, inLength: 512 }).status).to.equal(VIRTIO_BLK_S_UNSUPP);
  });

  it('discards and zeroes ranges; the host file reads back zeroes', () => {
    f = blkFixture({ image: randomBytes(1 << 20) });
    expect(submit(f, { type: VIRTIO_BLK_T_DISCARD, out: ranges({ sector: 8, count: 8 }, { sector: 64, count: 16 }) }).status).to.equal(VIRTIO_BLK_S_OK);
    expect(submit(f, { type: VIRTIO_BLK_T_WRITE_ZEROES, out: ranges({ sector: 200, count: 3 }) }).status).to.equal(VIRTIO_BLK_S_OK);
    expect(submit(f, { type: VIRTIO_BLK_T_WRITE_ZEROES, out: ranges({ sector: 300, count: 8, flags: VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP }) }).status).to.equal(
      VIRTIO_BLK_S_OK,
    );
    const host = fs.readFileSync(f.file);
    for (const [s, n] of [
      [8, 8],
      [64, 16],
      [200, 3],
      [300, 8],
    ] as const) {
      expect(
        host.subarray(s * 512, (s + n) * 512).every((x) => x === 0),
        `sectors ${s}+${n}`,
      ).to.equal(true);
    }
    expect(host.subarray(203 * 512, 204 * 512).some((x) => x !== 0)).to.equal(true);
  });

  it('validates discard ranges: bounds, flags, count', () => {
    f = blkFixture();
    expect(submit(f, { type: VIRTIO_BLK_T_DISCARD, out: ranges({ sector: 2040, count: 16 }) }).status).to.equal(VIRTIO_BLK_S_IOERR);
    expect(submit(f, { type: VIRTIO_BLK_T_DISCARD, out: ranges({ sector: 0, count: 8, flags: VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP }) }).status).to.equal(
      VIRTIO_BLK_S_UNSUPP,
    );
    expect(submit(f, { type: VIRTIO_BLK_T_DISCARD, out: new Uint8Array(20) }).status).to.equal(VIRTIO_BLK_S_IOERR);
    const many = ranges(...Array.from({ length: 17 }, (_, i) => ({ sector: i * 8, count: 8 })));
    expect(submit(f, { type: VIRTIO_BLK_T_DISCARD, out: many }).status).to.equal(VIRTIO_BLK_S_IOERR);
  });

  it('answers UNSUPP to DISCARD when the driver did not negotiate it', () => {
    f = blkFixture({ features: (o) => o & ~feature(VIRTIO_BLK_F_DISCARD) });
    expect(submit(f, { type: VIRTIO_BLK_T_DISCARD, out: ranges({ sector: 0, count: 8 }) }).status).to.equal(VIRTIO_BLK_S_UNSUPP);
  });

  it('answers a request too short for its header with IOERR and one without a status byte with nothing', () => {
    f = blkFixture();
    const heap = f.driver.heap;
    const hdr = heap.alloc(8);
    const status = heap.alloc(1);
    const head = f.queue.chain([
      { address: hdr, length: 8 },
      { address: status, length: 1, writable: true },
    ]);
    f.queue.submit(head);
    expect(f.queue.takeUsed()).to.deep.equal([{ id: head, len: 1 }]);
    expect(f.memory.readU8(status)).to.equal(VIRTIO_BLK_S_IOERR);
    const head2 = f.queue.chain([{ address: heap.alloc(16), length: 16 }]);
    f.queue.submit(head2);
    expect(f.queue.takeUsed()).to.deep.equal([{ id: head2, len: 0 }]);
    expect(f.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET).to.equal(0);
  });

  it('serves a whole ring of requests in one pass with one interrupt', () => {
    const image = randomBytes(1 << 20);
    f = blkFixture({ image, queueSize: 64 });
    const reqs = Array.from({ length: 12 }, (_, i) => prepare(f, { type: VIRTIO_BLK_T_IN, sector: i * 8, inLength: 4096 }));
    const before = f.interrupt.count;
    f.queue.submit(...reqs.map((r) => r.head));
    expect(f.interrupt.count - before).to.equal(1);
    expect(f.queue.takeUsed().map((u) => u.id)).to.deep.equal(reqs.map((r) => r.head));
    for (const [i, r] of reqs.entries()) expect(Buffer.from(f.memory.read(r.data, 4096)).equals(image.subarray(i * 4096, (i + 1) * 4096))).to.equal(true);
  });

  it('carries out a DISCARD or WRITE_ZEROES whole or not at all: a zero-count range refuses the request before any range is applied', () => {
    const image = randomBytes(1 << 20);
    f = blkFixture({ image });
    for (const type of [VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_T_DISCARD]) {
      expect(submit(f, { type, out: ranges({ sector: 8, count: 8 }, { sector: 64, count: 0 }) }).status).to.equal(VIRTIO_BLK_S_IOERR);
      expect(fs.readFileSync(f.file).equals(image), 'the image untouched').to.equal(true);
    }
  });

  it('answers an error of the image (an errno) with IOERR, and puts the device in DEVICE_NEEDS_RESET for any other fault', () => {
    f = blkFixture();
    const read = f.device.image.read.bind(f.device.image);
    f.device.image.read = () => {
      throw new SysError('pread', 5);
    };
    expect(submit(f, { type: VIRTIO_BLK_T_IN, sector: 0, inLength: 512 }).status).to.equal(VIRTIO_BLK_S_IOERR);
    expect(f.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET).to.equal(0);
    f.device.image.read = () => {
      throw new TypeError('a bug in the device');
    };
    const p = prepare(f, { type: VIRTIO_BLK_T_IN, sector: 0, inLength: 512 });
    f.queue.submit(p.head);
    expect(f.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET).to.not.equal(0);
    expect(f.errors.map((e) => e.message)).to.deep.equal(['a bug in the device']);
    expect(f.memory.readU8(p.status), 'no status made up for it').to.equal(0xff);
    f.device.image.read = read;
  });

  it('serves a ring the guest keeps refilling in passes of bounded work; a timer runs between them and no request is lost', async () => {
    const REFILLS = 10_000;
    const image = randomBytes(1 << 20);
    const file = tempImage(image);
    const memory = GuestMemory.anonymous([{ guestAddress: 0, size: 4 << 20 }]);
    const device = new RefillingBlk({ path: file, refills: REFILLS });
    const errors: Error[] = [];
    const transport = new VirtioMmioTransport(device, { memory, interrupt: new InterruptCounter(), onError: (e) => errors.push(e) });
    const driver = new TestDriver(transport, memory);
    try {
      if (!driver.negotiate(driver.deviceFeatures())) throw new Error('features refused');
      const queue = driver.queue(0, 16);
      driver.driverOk();
      const g = { file, memory, device, transport, driver, queue } as unknown as BlkFixture;
      const p = prepare(g, { type: VIRTIO_BLK_T_IN, sector: 8, inLength: 4096 });
      let readsWhenTimerRan = -1;
      setTimeout(() => {
        readsWhenTimerRan = device.reads;
      }, 0);
      queue.submit(p.head);
      expect(device.reads, 'requests served within the kick').to.equal(REQUESTS_PER_PASS);
      const used: number[] = [];
      for (const end = Date.now() + 10_000; used.length < REFILLS + 1 && Date.now() < end; ) {
        await new Promise((r) => setImmediate(r));
        used.push(...queue.takeUsed().map((u) => u.id));
      }
      expect(readsWhenTimerRan, 'the timer ran before the guest stopped refilling').to.be.within(1, REFILLS);
      expect(used, 'every request, in order, each once').to.deep.equal(Array(REFILLS + 1).fill(p.head));
      expect(Buffer.from(memory.read(p.data, 4096)).equals(image.subarray(4096, 8192))).to.equal(true);
      expect(errors).to.deep.equal([]);
    } finally {
      device.close();
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });
});
