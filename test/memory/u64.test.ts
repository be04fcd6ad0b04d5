import { expect } from 'chai';
import fc from 'fast-check';
import { readU64 } from '../../src/memory/u64.js';

describe('little-endian u64 reader', () => {
  const at = (value: bigint) => {
    const view = new DataView(new ArrayBuffer(12));
    view.setBigUint64(3, value, true);
    return readU64(view, 3);
  };

  it('reads every value below 2^53 exactly and refuses every value from 2^53 on', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (v) => {
        expect(at(v)).to.equal(v < 2n ** 53n ? Number(v) : undefined);
      }),
    );
    expect(at(2n ** 53n - 1n)).to.equal(Number.MAX_SAFE_INTEGER);
    expect(at(2n ** 53n)).to.equal(undefined);
    expect(at(2n ** 64n - 1n)).to.equal(undefined);
  });
});
