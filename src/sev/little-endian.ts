// AMD's SEV formats store big numbers (RSA moduli, EC coordinates, signatures) little-endian in fixed-size
// fields; node:crypto speaks big-endian. These two conversions are the only place the byte order flips.

/** The big-endian value of `width` bytes of a little-endian field; refuses a field whose excess bytes are not zero. */
export function fromLittleEndian(field: Uint8Array, width: number, what: string): Buffer {
  if (field.length < width) throw new Error(`${what}: field of ${field.length} bytes cannot hold ${width}`);
  for (let i = width; i < field.length; i++) {
    if (field[i] !== 0) throw new Error(`${what}: value does not fit in ${width} bytes`);
  }
  return Buffer.from(field.subarray(0, width)).reverse();
}

/** Writes a big-endian number into a little-endian field of `field.length` bytes (zero-extended). */
export function intoLittleEndian(bigEndian: Uint8Array, field: Uint8Array, what: string): void {
  let start = 0;
  while (start < bigEndian.length - 1 && bigEndian[start] === 0) start++;
  const digits = bigEndian.subarray(start);
  if (digits.length > field.length) throw new Error(`${what}: ${digits.length} bytes do not fit a ${field.length}-byte field`);
  field.fill(0);
  for (let i = 0; i < digits.length; i++) field[i] = digits[digits.length - 1 - i]!;
}
