// The XTS tweak masks in WebAssembly SIMD. XTS encrypts block j of a sector as E_K1(P ⊕ t_j) ⊕ t_j with
// t_0 = E_K2(IV) and t_{j+1} = t_j·α in GF(2^128); the AES calls run in node:crypto (AES-ECB over a whole batch),
// and the XOR of every block with its t_j, twice, is the part done here: in plain JavaScript it costs more than
// the AES itself. The module is assembled below from its opcodes (one small function, no toolchain needed).

// The WebAssembly global as this module uses it (the project's TypeScript lib has no DOM, where its types live).
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: { mask: MaskFunction; memory: { buffer: ArrayBuffer } } };
};
type MaskFunction = (data: number, tweaks: number, sectors: number, blocksPerSector: number) => void;

/** Bytes of sector data one call can mask: the module's data area. */
export const MASK_BATCH = 128 * 1024;
const TWEAKS_AT = MASK_BATCH;
/** Room for one starting tweak per 512-byte sector of a batch. */
const TWEAKS_SIZE = (MASK_BATCH / 512) * 16;
const PAGES = Math.ceil((MASK_BATCH + TWEAKS_SIZE) / 65536);

const I32 = 0x7f;
const V128 = 0x7b;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) return [...out, byte];
    out.push(byte | 0x80);
  }
}

const vector = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, content: number[]): number[] => [id, ...uleb(content.length), ...content];
const name = (text: string): number[] => vector([...Buffer.from(text)].map((b) => [b]));

const op = {
  localGet: (i: number) => [0x20, i],
  localSet: (i: number) => [0x21, i],
  localTee: (i: number) => [0x22, i],
  i32Const: (n: number) => [0x41, ...sleb(n)],
  i32Add: [0x6a],
  i32Sub: [0x6b],
  i32Shl: [0x74],
  i32Ne: [0x47],
  loop: [0x03, 0x40],
  end: [0x0b],
  brIfInnermost: [0x0d, 0],
  // SIMD (0xfd prefix); memory operands: alignment 2^4, offset 0.
  v128Load: [0xfd, ...uleb(0x00), 4, 0],
  v128Store: [0xfd, ...uleb(0x0b), 4, 0],
  v128Const: (bytes: Buffer) => [0xfd, ...uleb(0x0c), ...bytes],
  i8x16Shuffle: (lanes: number[]) => [0xfd, ...uleb(0x0d), ...lanes],
  v128And: [0xfd, ...uleb(0x4e)],
  v128Xor: [0xfd, ...uleb(0x51)],
  i64x2Shl: [0xfd, ...uleb(0xcb)],
  i64x2ShrS: [0xfd, ...uleb(0xcc)],
};

/** What a bit carried out of each 64-bit half adds after the shift: 0x87 into the low half (the field's
 * reduction, x^128 = x^7 + x^2 + x + 1), 1 into the high half. */
function carryBits(): Buffer {
  const bits = Buffer.alloc(16);
  bits.writeBigUInt64LE(0x87n, 0);
  bits.writeBigUInt64LE(1n, 8);
  return bits;
}
const SWAP_HALVES = [8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7];

/**
 * mask(data, tweaks, sectors, blocksPerSector): for each sector, t = the 16 bytes at `tweaks` (then the next 16),
 * and every block of the sector ^= t, t = t·α.
 */
function maskFunction(): number[] {
  const [data, tweaks, sectors, blocksPerSector, sectorEnd, t, carry] = [0, 1, 2, 3, 4, 5, 6];
  const locals = vector([
    [1, I32],
    [2, V128],
  ]);
  const code = [
    ...op.loop,
    ...op.localGet(tweaks),
    ...op.v128Load,
    ...op.localSet(t),
    ...op.localGet(tweaks),
    ...op.i32Const(16),
    ...op.i32Add,
    ...op.localSet(tweaks),
    ...op.localGet(data),
    ...op.localGet(blocksPerSector),
    ...op.i32Const(4),
    ...op.i32Shl,
    ...op.i32Add,
    ...op.localSet(sectorEnd),
    ...op.loop,
    // block ^= t
    ...op.localGet(data),
    ...op.localGet(data),
    ...op.v128Load,
    ...op.localGet(t),
    ...op.v128Xor,
    ...op.v128Store,
    // t = (t << 1 in each half) ^ (each half's top bit, moved to the other half, selecting carryBits)
    ...op.localGet(t),
    ...op.i32Const(63),
    ...op.i64x2ShrS,
    ...op.localSet(carry),
    ...op.localGet(t),
    ...op.i32Const(1),
    ...op.i64x2Shl,
    ...op.localGet(carry),
    ...op.localGet(carry),
    ...op.i8x16Shuffle(SWAP_HALVES),
    ...op.v128Const(carryBits()),
    ...op.v128And,
    ...op.v128Xor,
    ...op.localSet(t),
    ...op.localGet(data),
    ...op.i32Const(16),
    ...op.i32Add,
    ...op.localTee(data),
    ...op.localGet(sectorEnd),
    ...op.i32Ne,
    ...op.brIfInnermost,
    ...op.end,
    ...op.localGet(sectors),
    ...op.i32Const(1),
    ...op.i32Sub,
    ...op.localTee(sectors),
    ...op.brIfInnermost,
    ...op.end,
    ...op.end,
  ];
  return [...locals, ...code];
}

function assemble(): Uint8Array {
  const body = maskFunction();
  return Uint8Array.from([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vector([[0x60, ...vector([[I32], [I32], [I32], [I32]]), ...vector([])]])),
    ...section(3, vector([[0]])),
    ...section(5, vector([[0, ...uleb(PAGES)]])),
    ...section(
      7,
      vector([
        [...name('mask'), 0, 0],
        [...name('memory'), 2, 0],
      ]),
    ),
    ...section(10, vector([[...uleb(body.length), ...body]])),
  ]);
}

let compiled: object | undefined;

/** A data area of MASK_BATCH bytes and its sectors' starting tweaks, masked in place. */
export class TweakMasks {
  /** Where the sectors to mask are put (MASK_BATCH bytes). */
  readonly data: Buffer;
  /** Where each sector's starting tweak E_K2(IV) is put, 16 bytes each. */
  readonly tweaks: Buffer;
  private readonly mask: MaskFunction;

  constructor() {
    compiled ??= new WebAssembly.Module(assemble());
    const { exports } = new WebAssembly.Instance(compiled);
    this.mask = exports.mask;
    this.data = Buffer.from(exports.memory.buffer, 0, MASK_BATCH);
    this.tweaks = Buffer.from(exports.memory.buffer, TWEAKS_AT, TWEAKS_SIZE);
  }

  /** XORs each block of the first `sectors` sectors of `data` with its tweak. */
  apply(sectors: number, sectorSize: number): void {
    if (sectors * sectorSize > MASK_BATCH || sectors * 16 > TWEAKS_SIZE || sectorSize % 16 !== 0) {
      throw new RangeError(`${sectors} sectors of ${sectorSize} bytes do not fit the tweak masks' area`);
    }
    if (sectors > 0) this.mask(0, TWEAKS_AT, sectors, sectorSize / 16);
  }
}
