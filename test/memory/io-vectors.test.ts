import { expect } from 'chai';
import fc from 'fast-check';
import { IoVectors, iovec } from '../../src/memory/io-vectors.js';

/** The (base, length) pairs left in `v`, as the kernel would read them. */
function remaining(v: IoVectors): [number, number][] {
  const view = new DataView(v.bytes.buffer, v.byteOffset, v.count * iovec.size);
  return Array.from({ length: v.count }, (_, i) => [Number(view.getBigUint64(i * 16, true)), Number(view.getBigUint64(i * 16 + 8, true))]);
}

describe('I/O vectors', () => {
  it('lays out struct iovec with 64-bit bases above 4 GiB', () => {
    const v = new IoVectors(4);
    expect(v.push(0x7fff_1234_5000, 4096)).to.equal(true);
    expect(v.push(0x1_0000_0000, 1)).to.equal(true);
    expect(remaining(v)).to.deep.equal([
      [0x7fff_1234_5000, 4096],
      [0x1_0000_0000, 1],
    ]);
    expect([v.count, v.length]).to.deep.equal([2, 4097]);
  });

  it('refuses a vector beyond its capacity', () => {
    const v = new IoVectors(1);
    expect(v.push(0x1000, 1)).to.equal(true);
    expect(v.push(0x2000, 1)).to.equal(false);
    expect(v.count).to.equal(1);
  });

  it('after a short transfer of n bytes, describes exactly the bytes not yet moved', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 1 << 20 }), { minLength: 1, maxLength: 40 }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 5 }),
        (lengths, cuts) => {
          const v = new IoVectors(64);
          let base = 0x7f00_0000_0000;
          const bytes: number[] = []; // the host address of every byte, run-length: [start, length]
          for (const length of lengths) {
            v.push(base, length);
            bytes.push(base, length);
            base += length + 4096;
          }
          let moved = 0;
          const total = lengths.reduce((a, b) => a + b, 0);
          for (const cut of cuts) {
            const n = Math.floor(cut * (total - moved));
            v.advance(n);
            moved += n;
          }
          // Expected: the original vectors with the first `moved` bytes dropped.
          const expected: [number, number][] = [];
          let skip = moved;
          for (let i = 0; i < bytes.length; i += 2) {
            const [start, length] = [bytes[i]!, bytes[i + 1]!];
            if (skip >= length) {
              skip -= length;
              continue;
            }
            expected.push([start + skip, length - skip]);
            skip = 0;
          }
          expect(remaining(v)).to.deep.equal(expected);
          expect(v.length).to.equal(total - moved);
        },
      ),
    );
  });
});
