import { expect } from 'chai';
import fc from 'fast-check';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import {
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_USED_F_NO_NOTIFY,
  feature,
} from '../../src/virtio/abi.js';
import { Virtqueue, VirtqueueError, ringBytes } from '../../src/virtio/virtqueue.js';
import { type BlkFixture, FIXTURE_ROM, blkFixture, prepare, submit } from './blk-fixture.js';
import { GuestHeap } from './driver.js';

const NEXT = VRING_DESC_F_NEXT;
const WRITE = VRING_DESC_F_WRITE;
const INDIRECT = VRING_DESC_F_INDIRECT;

describe('split virtqueue', () => {
  let f: BlkFixture;
  afterEach(() => f?.close());

  /** Submits head and expects the device to stop with DEVICE_NEEDS_RESET for `reason`. */
  function expectBroken(head: number, reason: RegExp): void {
    const before = f.interrupt.count;
    f.queue.submit(head);
    expect(f.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 'DEVICE_NEEDS_RESET').to.not.equal(0);
    expect(f.driver.interruptStatus() & VIRTIO_MMIO_INT_CONFIG).to.not.equal(0);
    expect(f.interrupt.count).to.equal(before + 1);
    expect(f.errors).to.have.length(1);
    expect(f.errors[0]).to.be.instanceOf(VirtqueueError);
    expect(f.errors[0]!.message).to.match(reason);
    expect(f.queue.takeUsed()).to.deep.equal([]);
  }

  describe('validation (each rule puts the device in DEVICE_NEEDS_RESET)', () => {
    it('a chain that loops', () => {
      f = blkFixture();
      const buf = f.driver.heap.alloc(16);
      f.queue.writeDesc(0, buf, 16, NEXT, 1);
      f.queue.writeDesc(1, buf, 16, NEXT, 0);
      expectBroken(0, /longer than the queue/);
    });

    it('a next index beyond the queue', () => {
      f = blkFixture();
      f.queue.writeDesc(0, f.driver.heap.alloc(16), 16, NEXT, 16);
      expectBroken(0, /links to 16, beyond its table of 16/);
    });

    it('a head index beyond the queue', () => {
      f = blkFixture();
      expectBroken(99, /entry 99 is beyond the queue size 16/);
    });

    it('an available index that jumps more than the queue size', () => {
      f = blkFixture();
      f.memory.writeU16(f.queue.avail + 2, 17);
      f.queue.notify();
      expect(f.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET).to.not.equal(0);
      expect(f.errors[0]!.message).to.match(/moved from 0 to 17, more than the queue size 16/);
    });

    it('a buffer outside guest RAM', () => {
      f = blkFixture();
      f.queue.writeDesc(0, (4 << 20) - 8, 16, 0, 0);
      expectBroken(0, /0x3ffff8\+0x10 of descriptor 0 is not inside guest RAM/);
    });

    it('a buffer at an address beyond 2^53', () => {
      f = blkFixture();
      f.queue.writeDesc(0, 2 ** 63, 16, 0, 0);
      expectBroken(0, /not inside guest RAM/);
    });

    it('a device-readable buffer after a device-writable one', () => {
      f = blkFixture();
      const b = f.driver.heap.alloc(32);
      f.queue.writeDesc(0, b, 16, WRITE | NEXT, 1);
      f.queue.writeDesc(1, b + 16, 16, 0, 0);
      expectBroken(0, /readable descriptor 1 follows a device-writable one/);
    });

    it('an indirect table whose length is not a multiple of 16', () => {
      f = blkFixture();
      f.queue.writeDesc(0, f.driver.heap.alloc(64), 40, INDIRECT, 0);
      expectBroken(0, /indirect table length 40/);
    });

    it('an empty indirect table', () => {
      f = blkFixture();
      f.queue.writeDesc(0, f.driver.heap.alloc(64), 0, INDIRECT, 0);
      expectBroken(0, /indirect table length 0/);
    });

    it('an indirect table longer than the queue', () => {
      f = blkFixture();
      f.queue.writeDesc(0, f.driver.heap.alloc(16 * 17), 16 * 17, INDIRECT, 0);
      expectBroken(0, /17 descriptors exceeds the queue size 16/);
    });

    it('an indirect table outside guest RAM', () => {
      f = blkFixture();
      f.queue.writeDesc(0, (4 << 20) - 16, 32, INDIRECT, 0);
      expectBroken(0, /indirect table .* is not inside guest RAM/);
    });

    it('a nested indirect descriptor', () => {
      f = blkFixture();
      const table = f.driver.heap.alloc(32);
      f.queue.writeDesc(0, f.driver.heap.alloc(16), 16, INDIRECT, 0, table);
      f.queue.writeDesc(0, table, 16, INDIRECT, 0);
      expectBroken(0, /nested indirect/);
    });

    it('an indirect descriptor that also has NEXT', () => {
      f = blkFixture();
      const table = f.driver.heap.alloc(32);
      f.queue.writeDesc(0, table, 32, INDIRECT | NEXT, 1);
      expectBroken(0, /also has NEXT/);
    });

    it('a loop inside an indirect table', () => {
      f = blkFixture();
      const table = f.driver.heap.alloc(32);
      const b = f.driver.heap.alloc(16);
      f.queue.writeDesc(0, b, 16, NEXT, 1, table);
      f.queue.writeDesc(1, b, 16, NEXT, 0, table);
      f.queue.writeDesc(0, table, 32, INDIRECT, 0);
      expectBroken(0, /longer than its indirect table/);
    });

    it('an indirect descriptor when INDIRECT_DESC was not negotiated', () => {
      f = blkFixture({ features: (o) => o & ~feature(VIRTIO_RING_F_INDIRECT_DESC) });
      const p = prepare(f, { type: VIRTIO_BLK_T_IN, inLength: 512 }, true);
      expectBroken(p.head, /VIRTIO_F_INDIRECT_DESC was not negotiated/);
    });

    it('lengths that add up to 4 GiB or more', function () {
      // A 2.5 GiB region (lazily zeroed, never touched) lets real in-RAM buffers overflow 32 bits.
      const big = 5 * 2 ** 29;
      let memory: GuestMemory;
      try {
        memory = GuestMemory.shared([
          { guestAddress: 0, size: 1 << 20 },
          { guestAddress: 2 ** 32, size: big },
        ]);
      } catch {
        this.skip();
      }
      const heap = new GuestHeap(memory, 0x1000, 1 << 20);
      const rings = { desc: heap.alloc(256, 16), avail: heap.alloc(64, 2), used: heap.alloc(256, 4) };
      const q = new Virtqueue(
        memory,
        { size: 8, descTable: rings.desc, availRing: rings.avail, usedRing: rings.used },
        { eventIdx: false, indirect: false },
        8,
      );
      const desc = (i: number, addr: number, len: number, flags: number, next: number) => {
        memory.writeU64(rings.desc + 16 * i, BigInt(addr));
        memory.writeU32(rings.desc + 16 * i + 8, len);
        memory.writeU16(rings.desc + 16 * i + 12, flags);
        memory.writeU16(rings.desc + 16 * i + 14, next);
      };
      desc(0, 2 ** 32, 2 ** 31 + 4096, NEXT, 1);
      desc(1, 2 ** 32, 2 ** 31 - 4096, NEXT, 2);
      desc(2, 2 ** 32, 1, 0, 0);
      memory.writeU16(rings.avail + 2, 1);
      expect(() => q.pop()).to.throw(VirtqueueError, /4 GiB or longer/);
    });
  });

  describe('read-only guest memory (the firmware slot)', () => {
    const ROM = FIXTURE_ROM.guestAddress;
    const romIntact = () => f.memory.read(ROM, FIXTURE_ROM.size).every((b) => b === 0xaa);

    it('a device-writable buffer there breaks the queue, and the device writes nothing into it', () => {
      f = blkFixture({ rom: true });
      f.memory.fill(ROM, FIXTURE_ROM.size, 0xaa);
      const header = f.driver.heap.alloc(16);
      f.memory.writeU32(header, VIRTIO_BLK_T_IN);
      const status = f.driver.heap.alloc(1, 1);
      const head = f.queue.chain([
        { address: header, length: 16 },
        { address: ROM + 0x1000, length: 512, writable: true },
        { address: status, length: 1, writable: true },
      ]);
      expectBroken(head, /device-writable buffer 0x1001000\+0x200 of descriptor 1 is in read-only guest memory/);
      expect(romIntact()).to.equal(true);
    });

    it('a used ring there refuses activation', () => {
      f = blkFixture({ rom: true });
      f.memory.fill(ROM, FIXTURE_ROM.size, 0xaa);
      f.driver.setStatus(0);
      if (!f.driver.negotiate(f.driver.deviceFeatures())) throw new Error('features refused');
      const rings = ringBytes(16);
      f.queue = f.driver.queue(0, 16, { desc: f.driver.heap.alloc(rings.desc, 16), avail: f.driver.heap.alloc(rings.avail, 2), used: ROM });
      f.driver.driverOk();
      expect(f.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET).to.not.equal(0);
      expect(f.errors.map((e) => e.message)).to.deep.equal(['used ring 0x1000000+0x86 is in read-only guest memory']);
      expect(romIntact()).to.equal(true);
    });

    it('a device-readable buffer there is read as any other', () => {
      f = blkFixture({ rom: true });
      f.memory.fill(ROM, FIXTURE_ROM.size, 0xaa);
      const header = f.driver.heap.alloc(16);
      f.memory.writeU32(header, VIRTIO_BLK_T_OUT);
      const status = f.driver.heap.alloc(1, 1);
      f.queue.submit(
        f.queue.chain([
          { address: header, length: 16 },
          { address: ROM, length: 512 },
          { address: status, length: 1, writable: true },
        ]),
      );
      expect(f.queue.takeUsed()).to.have.length(1);
      expect(f.memory.readU8(status)).to.equal(VIRTIO_BLK_S_OK);
      expect(f.errors).to.deep.equal([]);
    });
  });

  describe('notification suppression', () => {
    it('EVENT_IDX: interrupts only when the used index passes used_event, and publishes avail_event', () => {
      f = blkFixture({ queueSize: 64 });
      const reqs = Array.from({ length: 4 }, () => prepare(f, { type: VIRTIO_BLK_T_IN, inLength: 512 }));
      f.queue.setUsedEvent(2); // "interrupt me once the entry at index 2 is used"
      const before = f.interrupt.count;
      f.queue.submit(reqs[0]!.head, reqs[1]!.head);
      expect(f.interrupt.count - before, 'used idx 0 -> 2 does not pass 2').to.equal(0);
      expect(f.queue.availEvent()).to.equal(2);
      f.queue.submit(reqs[2]!.head);
      expect(f.interrupt.count - before, 'used idx 2 -> 3 passes 2').to.equal(1);
      f.queue.submit(reqs[3]!.head);
      expect(f.interrupt.count - before, 'used_event stays at 2').to.equal(1);
      expect(f.queue.availEvent()).to.equal(4);
      expect(f.queue.takeUsed()).to.have.length(4);
    });

    it('EVENT_IDX: the used index wraps around 65536 without losing an interrupt', () => {
      f = blkFixture({ queueSize: 4 });
      const p = prepare(f, { type: VIRTIO_BLK_T_IN, inLength: 512 });
      let interrupts = 0;
      for (let i = 0; i < 70000; i++) {
        f.queue.setUsedEvent(f.queue.usedIdx());
        const before = f.interrupt.count;
        f.queue.submit(p.head);
        interrupts += f.interrupt.count - before;
      }
      expect(interrupts).to.equal(70000);
      expect(f.queue.usedIdx()).to.equal(70000 & 0xffff);
    });

    it('without EVENT_IDX: VRING_AVAIL_F_NO_INTERRUPT suppresses interrupts, and NO_NOTIFY is cleared when idle', () => {
      f = blkFixture({ features: (o) => o & ~feature(VIRTIO_RING_F_EVENT_IDX) });
      f.queue.setAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
      const before = f.interrupt.count;
      expect(submit(f, { type: VIRTIO_BLK_T_IN, inLength: 512 }).status).to.equal(0);
      expect(f.interrupt.count).to.equal(before);
      f.queue.setAvailFlags(0);
      submit(f, { type: VIRTIO_BLK_T_IN, inLength: 512 });
      expect(f.interrupt.count).to.equal(before + 1);
      expect(f.queue.usedFlags() & VRING_USED_F_NO_NOTIFY).to.equal(0);
    });

    it('re-checks the ring after re-enabling notifications, so a buffer added meanwhile is not lost', () => {
      const memory = GuestMemory.shared([{ guestAddress: 0, size: 1 << 16 }]);
      const sizes = ringBytes(8);
      const layout = { size: 8, descTable: 0x1000, availRing: 0x1000 + sizes.desc, usedRing: 0x2000 };
      for (const eventIdx of [true, false]) {
        memory.fill(0, 1 << 16);
        const q = new Virtqueue(memory, layout, { eventIdx, indirect: false }, 8);
        memory.writeU16(layout.availRing + 2, 1);
        q.disableNotification();
        expect(q.pop()).to.not.equal(null);
        expect(q.pop()).to.equal(null);
        memory.writeU16(layout.availRing + 2, 2); // the driver adds a buffer while notifications are off
        expect(q.enableNotification(), `eventIdx=${eventIdx}`).to.equal(true);
        expect(q.pop()).to.not.equal(null);
        expect(q.enableNotification()).to.equal(false);
      }
    });
  });

  describe('properties', () => {
    const QUEUE = 8;
    const arbitraryDesc = fc.record({
      addr: fc.oneof(fc.integer({ min: 0, max: (1 << 16) + 64 }), fc.constantFrom(0, 0xfff0, 2 ** 53, 2 ** 64 - 16)),
      len: fc.oneof(fc.integer({ min: 0, max: 4096 }), fc.constantFrom(0, 1, 16, 48, 0xffff_ffff)),
      flags: fc.integer({ min: 0, max: 7 }),
      next: fc.oneof(fc.integer({ min: 0, max: QUEUE }), fc.integer({ min: 0, max: 0xffff })),
    });

    it('random descriptor tables, available rings and indexes: the device never throws, never leaves guest RAM, always terminates', () => {
      f = blkFixture({ queueSize: QUEUE });
      const { memory, queue, driver, transport } = f;
      const tables = driver.heap.alloc(16 * QUEUE * 4, 16);
      fc.assert(
        fc.property(
          fc.array(arbitraryDesc, { minLength: QUEUE * 5, maxLength: QUEUE * 5 }),
          fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: QUEUE, maxLength: QUEUE }),
          fc.integer({ min: 0, max: 0xffff }),
          fc.boolean(),
          (descs, ring, availIdx, eventIdx) => {
            const offered = driver.deviceFeatures();
            driver.negotiate(eventIdx ? offered : offered & ~feature(VIRTIO_RING_F_EVENT_IDX));
            driver.queue(0, QUEUE, queue);
            driver.driverOk();
            memory.fill(queue.used, ringBytes(QUEUE).used);
            descs.forEach((d, i) => {
              // Direct descriptors use the low quarter of the heap; INDIRECT ones point into `tables`.
              const addr = d.flags & INDIRECT && d.addr < 1 << 16 ? tables + (d.addr % 4) * 16 * QUEUE : d.addr;
              const at = i < QUEUE ? queue.desc + 16 * i : tables + 16 * (i - QUEUE);
              memory.writeU64(at, BigInt.asUintN(64, BigInt(addr)));
              memory.writeU32(at + 8, d.len);
              memory.writeU16(at + 12, d.flags);
              memory.writeU16(at + 14, d.next);
            });
            for (const [i, h] of ring.entries()) memory.writeU16(queue.avail + 4 + 2 * i, h % (QUEUE + 2));
            memory.writeU16(queue.avail + 2, availIdx);
            expect(() => driver.write(0x50, 0)).to.not.throw();
            const error = transport.lastError;
            // Every failure is a diagnosed queue violation, never a stray exception from an unchecked access.
            if (error) expect(error, error.stack).to.be.instanceOf(VirtqueueError);
            const used = memory.readU16(queue.used + 2);
            expect(used).to.be.at.most(Math.min(availIdx, QUEUE));
            f.errors.length = 0;
          },
        ),
        { numRuns: 300 },
      );
    });
  });
});
