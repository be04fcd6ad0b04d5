import { expect } from 'chai';
import fc from 'fast-check';
import {
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from '../../src/virtio/abi.js';
import { type BlkChain, type BlkDisk, MAX_RANGES, OUTHDR_SIZE, parseBlkRequest } from '../../src/virtio/blk-request.js';

const header = (type: number, sector: bigint): DataView => {
  const v = new DataView(new ArrayBuffer(OUTHDR_SIZE));
  v.setUint32(0, type, true);
  v.setBigUint64(8, sector, true);
  return v;
};

/** A chain whose readable bytes after the header are `payload` (zeroes beyond it). */
const chain = (readableLength: number, writableLength: number, payload: Uint8Array, reads: number[] = []): BlkChain => ({
  readableLength,
  writableLength,
  read: (offset, into) => {
    reads.push(into.length);
    expect(offset).to.equal(OUTHDR_SIZE);
    into.set(payload.subarray(0, into.length));
    return Math.min(into.length, readableLength - offset);
  },
});

const disk = fc.record({
  sectors: fc.integer({ min: 0, max: 2 ** 40 }),
  readOnly: fc.boolean(),
  discard: fc.boolean(),
  writeZeroes: fc.boolean(),
});
const sector = fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 2n ** 41n }), fc.constantFrom(0n, 2n ** 53n - 1n, 2n ** 53n));
const type = fc.oneof(
  fc.constantFrom(VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES),
  fc.nat(),
);
/** A range list: mostly well-formed entries, with hostile sectors, counts and flags among them. */
const rangeList = fc
  .array(
    fc.record({
      sector: fc.oneof({ arbitrary: fc.bigInt({ min: 0n, max: 4096n }), weight: 4 }, { arbitrary: sector, weight: 1 }),
      count: fc.oneof(
        { arbitrary: fc.integer({ min: 1, max: 4096 }), weight: 4 },
        { arbitrary: fc.constantFrom(0, 1 << 22, (1 << 22) + 1, 0xffff_ffff), weight: 1 },
      ),
      flags: fc.oneof({ arbitrary: fc.constant(0), weight: 12 }, { arbitrary: fc.constant(1), weight: 3 }, { arbitrary: fc.nat(), weight: 1 }),
    }),
    { maxLength: MAX_RANGES + 2 },
  )
  .map((rs) => {
    const b = new Uint8Array(16 * rs.length);
    const v = new DataView(b.buffer);
    rs.forEach((r, i) => {
      v.setBigUint64(16 * i, r.sector, true);
      v.setUint32(16 * i + 8, r.count, true);
      v.setUint32(16 * i + 12, r.flags, true);
    });
    return b;
  });

describe('virtio-blk request parsing', () => {
  it('turns any header, chain shape and range list into a request inside the disk and the chain, or a refusal; never throws', () => {
    // Lengths as drivers lay them out (header + sectors, or header + ranges; sectors + status) and any other.
    const readable = fc.oneof(
      fc.nat({ max: 2 ** 32 - 1 }),
      fc.nat({ max: 4096 }).map((k) => OUTHDR_SIZE + 512 * k),
      fc.nat({ max: 18 }).map((k) => OUTHDR_SIZE + 16 * k),
    );
    const writable = fc.oneof(
      fc.nat({ max: 2 ** 32 - 1 }),
      fc.nat({ max: 4096 }).map((k) => 512 * k + 1),
    );
    const seen = new Set<string>();
    const shortHeader = fc.oneof({ arbitrary: fc.constant(false), weight: 9 }, { arbitrary: fc.constant(true), weight: 1 });
    fc.assert(
      fc.property(
        disk,
        type,
        sector,
        readable,
        writable,
        shortHeader,
        rangeList,
        fc.boolean(),
        (d: BlkDisk, t, s, readable, writable, shortHeader, list, listSized) => {
          const readableLength = listSized ? OUTHDR_SIZE + list.length : Math.max(readable, shortHeader ? 0 : OUTHDR_SIZE);
          const reads: number[] = [];
          const r = parseBlkRequest(header(t, s), chain(shortHeader ? Math.min(readable, OUTHDR_SIZE - 1) : readableLength, writable, list, reads), d);
          if (writable === 0) {
            expect(r.type).to.equal('no-status');
            return;
          }
          expect(
            reads.every((n) => n <= 16 * MAX_RANGES),
            'copies of guest bytes are bounded',
          ).to.equal(true);
          if (r.type === 'refused') {
            expect([VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP]).to.include(r.status);
            return;
          }
          seen.add(r.type);
          const inside = (position: number, length: number) => {
            expect(Number.isSafeInteger(position) && position >= 0 && position % 512 === 0 && length % 512 === 0).to.equal(true);
            expect(position + length).to.be.at.most(d.sectors * 512);
          };
          switch (r.type) {
            case 'no-status':
              expect.fail('a chain with a writable byte has room for its status');
              break;
            case 'in':
              inside(r.position, r.length);
              expect(r.length).to.equal(writable - 1);
              break;
            case 'out':
              expect(d.readOnly).to.equal(false);
              inside(r.position, r.length);
              expect(r.length).to.equal(readableLength - OUTHDR_SIZE);
              break;
            case 'get-id':
              expect(r.length).to.be.at.most(Math.min(20, writable - 1));
              break;
            case 'discard':
            case 'write-zeroes':
              expect(d.readOnly).to.equal(false);
              expect(r.type === 'discard' ? d.discard : d.writeZeroes).to.equal(true);
              expect(r.ranges.length).to.be.within(1, MAX_RANGES);
              for (const range of r.ranges) {
                inside(range.position, range.length);
                expect(range.length).to.be.greaterThan(0);
              }
              break;
            case 'flush':
              break;
          }
        },
      ),
      { numRuns: 5000 },
    );
    expect([...seen].sort(), 'every kind of request came up').to.deep.equal(['discard', 'flush', 'get-id', 'in', 'out', 'write-zeroes']);
  });

  it('refuses a range list whole when any range is invalid, whatever comes before it', () => {
    const d: BlkDisk = { sectors: 2048, readOnly: false, discard: true, writeZeroes: true };
    const list = new Uint8Array(32);
    const v = new DataView(list.buffer);
    v.setBigUint64(0, 8n, true);
    v.setUint32(8, 8, true);
    v.setBigUint64(16, 64n, true); // count 0
    const parsed = parseBlkRequest(header(VIRTIO_BLK_T_WRITE_ZEROES, 0n), chain(OUTHDR_SIZE + 32, 1, list), d);
    expect(parsed).to.deep.equal({ type: 'refused', status: VIRTIO_BLK_S_IOERR, reason: 'range of 0 sectors' });
  });
});
