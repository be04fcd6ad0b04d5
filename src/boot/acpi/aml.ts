// Just enough AML (ACPI Machine Language, ACPI 6.5 chapter 20) to describe fixed devices in a DSDT:
// scopes, devices, named integers/strings/packages and resource templates. Each helper returns the
// encoded bytes, so a table is a tree of byte arrays joined at the end.

export type Aml = Uint8Array;

const concat = (parts: readonly Aml[]): Aml => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/** PkgLength: the length of the package including the PkgLength bytes themselves (20.2.4). */
export function pkgLength(contentLength: number): Aml {
  for (let extra = 0; extra <= 3; extra++) {
    const total = contentLength + 1 + extra;
    if (extra === 0 && total < 0x40) return Uint8Array.of(total);
    if (extra > 0 && total < 2 ** (4 + 8 * extra)) {
      const bytes = [(extra << 6) | (total & 0xf)];
      for (let i = 0; i < extra; i++) bytes.push((total >>> (4 + 8 * i)) & 0xff);
      return Uint8Array.from(bytes);
    }
  }
  throw new RangeError(`AML package of ${contentLength} bytes is too large`);
}

const withPkgLength = (opcode: readonly number[], body: readonly Aml[]): Aml => {
  const content = concat(body);
  return concat([Uint8Array.from(opcode), pkgLength(content.length), content]);
};

const NAME_CHAR = /^[A-Z_][A-Z0-9_]{0,3}$/;

/** A NameSeg padded with '_' to four characters, or a rooted path `\_SB_`. */
export function nameString(name: string): Aml {
  const rooted = name.startsWith('\\');
  const segments = (rooted ? name.slice(1) : name).split('.');
  if (segments.length !== 1) throw new RangeError(`AML name ${name}: multi-segment paths are not needed here`);
  const seg = segments[0]!;
  if (!NAME_CHAR.test(seg)) throw new RangeError(`invalid AML name segment "${seg}"`);
  const bytes = new TextEncoder().encode(seg.padEnd(4, '_'));
  return rooted ? concat([Uint8Array.of(0x5c), bytes]) : bytes;
}

export function integer(value: number): Aml {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`AML integer ${value} is not a non-negative safe integer`);
  if (value === 0) return Uint8Array.of(0x00);
  if (value === 1) return Uint8Array.of(0x01);
  if (value <= 0xff) return Uint8Array.of(0x0a, value);
  if (value <= 0xffff) return Uint8Array.of(0x0b, value & 0xff, value >> 8);
  if (value <= 0xffff_ffff) {
    const b = new Uint8Array(5);
    b[0] = 0x0c;
    new DataView(b.buffer).setUint32(1, value, true);
    return b;
  }
  const b = new Uint8Array(9);
  b[0] = 0x0e;
  new DataView(b.buffer).setBigUint64(1, BigInt(value), true);
  return b;
}

export function string(value: string): Aml {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the range is the point: every ASCII character but NUL.
  if (!/^[\x01-\x7f]*$/.test(value)) throw new RangeError(`AML string "${value}" must be non-NUL ASCII`);
  return concat([Uint8Array.of(0x0d), new TextEncoder().encode(value), Uint8Array.of(0)]);
}

/** EISA ID compression of a PNP id such as "PNP0501" into a 32-bit integer (ASL EISAID()). */
export function eisaId(id: string): Aml {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new RangeError(`"${id}" is not an EISA id (three letters, four hex digits)`);
  const c = (i: number): number => id.charCodeAt(i) - 0x40;
  const vendor = (c(0) << 10) | (c(1) << 5) | c(2);
  const product = parseInt(id.slice(3), 16);
  // Stored big-endian on the wire: vendor word then product word, byte-swapped.
  const value = ((vendor >> 8) & 0xff) | ((vendor & 0xff) << 8) | (((product >> 8) & 0xff) << 16) | ((product & 0xff) << 24);
  return integer(value >>> 0);
}

export function name(n: string, value: Aml): Aml {
  return concat([Uint8Array.of(0x08), nameString(n), value]);
}

export function scope(n: string, body: readonly Aml[]): Aml {
  return withPkgLength([0x10], [nameString(n), ...body]);
}

export function device(n: string, body: readonly Aml[]): Aml {
  return withPkgLength([0x5b, 0x82], [nameString(n), ...body]);
}

export function packageOf(elements: readonly Aml[]): Aml {
  if (elements.length > 0xff) throw new RangeError('AML package with more than 255 elements');
  return withPkgLength([0x12], [Uint8Array.of(elements.length), ...elements]);
}

/** A ResourceTemplate: a Buffer of resource descriptors closed by an End Tag (6.4). */
export function resourceTemplate(descriptors: readonly Aml[]): Aml {
  const body = concat([...descriptors, Uint8Array.of(0x79, 0x00)]);
  return withPkgLength([0x11], [integer(body.length), body]);
}

/** IO(Decode16, base, base, 1, length): a fixed 16-bit decoded I/O range. */
export function ioPort(base: number, length: number): Aml {
  return Uint8Array.of(0x47, 0x01, base & 0xff, base >> 8, base & 0xff, base >> 8, 0x01, length);
}

/** IRQNoFlags(){irq}: an ISA interrupt, edge-triggered active-high. */
export function irqNoFlags(irq: number): Aml {
  if (irq < 0 || irq > 15) throw new RangeError(`ISA IRQ ${irq} out of range`);
  const mask = 1 << irq;
  return Uint8Array.of(0x22, mask & 0xff, mask >> 8);
}

/** Memory32Fixed(ReadWrite, base, length). */
export function memory32Fixed(base: number, length: number): Aml {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  b.set([0x86, 0x09, 0x00, 0x01]);
  v.setUint32(4, base, true);
  v.setUint32(8, length, true);
  return b;
}

/** Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive){gsi}: one extended interrupt. */
export function edgeInterrupt(gsi: number): Aml {
  const b = new Uint8Array(9);
  const v = new DataView(b.buffer);
  b.set([0x89, 0x06, 0x00, 0x03, 0x01]);
  v.setUint32(5, gsi, true);
  return b;
}

export { concat as amlConcat };
