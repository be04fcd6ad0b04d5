// Guest structures carry 64-bit little-endian fields (addresses, sectors, CIDs) that JavaScript holds
// as numbers, exact only below 2^53. One reader for all of them, so no caller ever computes with a
// rounded value: anything larger is refused, and the caller treats it as out of range.

const U32 = 0x1_0000_0000;
/** The high word of 2^53. */
const HIGH_LIMIT = 0x20_0000;

/** The little-endian u64 at `offset` of `view`, or undefined when it is 2^53 or more. */
export function readU64(view: DataView, offset: number): number | undefined {
  const high = view.getUint32(offset + 4, true);
  return high >= HIGH_LIMIT ? undefined : view.getUint32(offset, true) + high * U32;
}
