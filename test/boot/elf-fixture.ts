// A minimal ELF64 x86-64 executable with one PT_LOAD segment: a stand-in vmlinux for tests.
export interface ElfKernelSpec {
  paddr: number;
  code: Uint8Array;
  /** Bytes in memory (defaults to the code size); the rest is zero-filled. */
  memsz?: number;
  /** Defaults to paddr. */
  entry?: number;
}

export function elfKernel(spec: ElfKernelSpec): Uint8Array {
  const headerSize = 64;
  const phSize = 56;
  const offset = headerSize + phSize;
  const file = new Uint8Array(offset + spec.code.length);
  const v = new DataView(file.buffer);
  file.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(24, BigInt(spec.entry ?? spec.paddr), true);
  v.setBigUint64(32, BigInt(headerSize), true);
  v.setUint16(52, headerSize, true);
  v.setUint16(54, phSize, true);
  v.setUint16(56, 1, true);
  const ph = headerSize;
  v.setUint32(ph, 1, true); // PT_LOAD
  v.setUint32(ph + 4, 7, true);
  v.setBigUint64(ph + 8, BigInt(offset), true);
  v.setBigUint64(ph + 16, BigInt(spec.paddr), true);
  v.setBigUint64(ph + 24, BigInt(spec.paddr), true);
  v.setBigUint64(ph + 32, BigInt(spec.code.length), true);
  v.setBigUint64(ph + 40, BigInt(spec.memsz ?? spec.code.length), true);
  file.set(spec.code, offset);
  return file;
}
