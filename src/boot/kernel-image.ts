// Recognises and validates a Linux kernel image: a bzImage (x86 boot protocol, 64-bit entry) or an
// ELF vmlinux. The result says which bytes go where and where the BSP enters; nothing is written to
// guest memory here, so the same description can be measured for a confidential launch.
import { BootFlags, SETUP_HEADER_OFFSET, setupHeader } from './boot-params-abi.js';
import { offsetOf } from '../sys/abi.js';
import { EM_X86_64, type Elf64Headers, ElfError, PT_LOAD, isElf, readElf64Headers } from './elf64.js';

export class KernelImageError extends Error {
  override readonly name = 'KernelImageError';
}

/** A contiguous piece of the image to copy to `guestAddress`, followed by `zeroFill` zero bytes. */
export interface KernelSegment {
  guestAddress: number;
  bytes: Uint8Array;
  zeroFill: number;
}

export interface BzImageKernel {
  kind: 'bzImage';
  /** The setup header exactly as in the file, from 0x1f1 to the end the image declares. */
  setupHeader: Uint8Array;
  protocolVersion: number;
  loadAddress: number;
  /** The 64-bit entry point: load address + 0x200. */
  entry: number;
  /** Bytes from `loadAddress` the kernel needs while it decompresses itself (setup_header.init_size). */
  initSize: number;
  /** Highest address (inclusive) the initrd may occupy. */
  initrdAddrMax: number;
  /** Largest command line the kernel accepts, not counting the terminating NUL. */
  cmdlineMax: number;
  canLoadAbove4G: boolean;
  segments: KernelSegment[];
}

export interface ElfKernel {
  kind: 'elf';
  entry: number;
  segments: KernelSegment[];
  /** One past the highest byte the image occupies. */
  end: number;
}

export type KernelImage = BzImageKernel | ElfKernel;

/** 2.12 introduced xloadflags, the only way an image says it has a 64-bit entry point. */
export const MIN_BOOT_PROTOCOL = 0x020c;
const ENTRY_64_OFFSET = 0x200;
/** Before 2.06 the command line limit was fixed at 255 bytes. */
const LEGACY_CMDLINE_MAX = 255;

const hdrOffset = (field: string): number => SETUP_HEADER_OFFSET + offsetOf(setupHeader, field);

export function parseKernelImage(file: Uint8Array): KernelImage {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  if (isElf(file)) return parseElf(file);
  if (
    file.length >= hdrOffset('header') + 4 &&
    view.getUint16(hdrOffset('boot_flag'), true) === BootFlags.bootFlagMagic &&
    view.getUint32(hdrOffset('header'), true) === BootFlags.headerMagic
  ) {
    return parseBzImage(file, view);
  }
  throw new KernelImageError('not a Linux kernel: neither a bzImage (no "HdrS" setup header at 0x202) nor an ELF vmlinux');
}

function parseBzImage(file: Uint8Array, view: DataView): BzImageKernel {
  const u8 = (f: string): number => view.getUint8(hdrOffset(f));
  const u16 = (f: string): number => view.getUint16(hdrOffset(f), true);
  const u32 = (f: string): number => view.getUint32(hdrOffset(f), true);

  const version = u16('version');
  const versionText = `${version >> 8}.${(version & 0xff).toString().padStart(2, '0')}`;
  if (version < MIN_BOOT_PROTOCOL) {
    throw new KernelImageError(`bzImage boot protocol ${versionText} is too old: 2.12 or newer is needed for the 64-bit entry point`);
  }
  // The header's own length is encoded in the short jump at 0x200: it ends where the jump lands.
  const headerEnd = 0x202 + view.getUint8(0x201);
  if (file.length < headerEnd) throw new KernelImageError(`bzImage truncated inside its setup header (${file.length} bytes)`);
  // Every field read below exists since protocol 2.10; a header claiming to end before them is corrupt.
  const lastFieldEnd = hdrOffset('init_size') + 4;
  if (headerEnd < lastFieldEnd) throw new KernelImageError(`bzImage setup header ends at 0x${headerEnd.toString(16)}, before init_size`);

  const setupSects = u8('setup_sects') === 0 ? 4 : u8('setup_sects');
  const setupBytes = (setupSects + 1) * 512;
  const protectedModeBytes = u32('syssize') * 16;
  if (protectedModeBytes === 0) throw new KernelImageError('bzImage declares an empty protected-mode kernel (syssize 0)');
  if (file.length < setupBytes + protectedModeBytes) {
    throw new KernelImageError(`bzImage truncated: ${file.length} bytes, the header declares ${setupBytes + protectedModeBytes}`);
  }
  if (!(u8('loadflags') & BootFlags.LOADED_HIGH)) throw new KernelImageError('bzImage is a zImage (loads below 1 MiB); only bzImage is supported');
  const xloadflags = u16('xloadflags');
  if (!(xloadflags & BootFlags.XLF_KERNEL_64)) throw new KernelImageError('bzImage has no 64-bit entry point (XLF_KERNEL_64 clear): a 64-bit kernel is needed');

  const alignment = u32('kernel_alignment');
  if (alignment === 0 || (alignment & (alignment - 1)) !== 0)
    throw new KernelImageError(`bzImage kernel_alignment 0x${alignment.toString(16)} is not a power of two`);
  // pref_address is where the kernel was linked to run: loading it there spares the decompressor a move,
  // and a non-relocatable kernel must be there. It is aligned to kernel_alignment by construction.
  const prefAddress = Number(view.getBigUint64(hdrOffset('pref_address'), true));
  if (prefAddress % alignment !== 0)
    throw new KernelImageError(`bzImage pref_address 0x${prefAddress.toString(16)} is not aligned to kernel_alignment 0x${alignment.toString(16)}`);
  const initSize = u32('init_size');
  if (initSize < protectedModeBytes) throw new KernelImageError(`bzImage init_size 0x${initSize.toString(16)} is smaller than the kernel itself`);

  return {
    kind: 'bzImage',
    setupHeader: file.slice(SETUP_HEADER_OFFSET, headerEnd),
    protocolVersion: version,
    loadAddress: prefAddress,
    entry: prefAddress + ENTRY_64_OFFSET,
    initSize,
    initrdAddrMax: u32('initrd_addr_max'),
    cmdlineMax: version >= 0x0206 ? u32('cmdline_size') : LEGACY_CMDLINE_MAX,
    canLoadAbove4G: (xloadflags & BootFlags.XLF_CAN_BE_LOADED_ABOVE_4G) !== 0,
    segments: [{ guestAddress: prefAddress, bytes: file.subarray(setupBytes, setupBytes + protectedModeBytes), zeroFill: 0 }],
  };
}

function parseElf(file: Uint8Array): ElfKernel {
  let elf: Elf64Headers;
  try {
    elf = readElf64Headers(file, 'ELF kernel');
  } catch (e) {
    throw e instanceof ElfError ? new KernelImageError(e.message) : e;
  }
  if (elf.machine !== EM_X86_64) throw new KernelImageError(`ELF kernel is for machine ${elf.machine}, not x86-64`);
  // vmlinux's entry is phys_startup_64: a physical address, as the 64-bit boot protocol needs.
  const { entry } = elf;
  const segments: KernelSegment[] = [];
  elf.programHeaders.forEach((ph, i) => {
    if (ph.type !== PT_LOAD) return;
    if (ph.offset + ph.filesz > file.length)
      throw new KernelImageError(`ELF kernel truncated: segment ${i} needs bytes up to ${ph.offset + ph.filesz}, the file has ${file.length}`);
    if (ph.memsz < ph.filesz) throw new KernelImageError(`ELF kernel segment ${i} is larger in the file than in memory`);
    segments.push({ guestAddress: ph.paddr, bytes: file.subarray(ph.offset, ph.offset + ph.filesz), zeroFill: ph.memsz - ph.filesz });
  });
  if (segments.length === 0) throw new KernelImageError('ELF kernel has no loadable (PT_LOAD) segment');
  const inside = segments.some((s) => entry >= s.guestAddress && entry < s.guestAddress + s.bytes.length);
  if (!inside) throw new KernelImageError(`ELF kernel entry 0x${entry.toString(16)} is not inside a loaded segment`);
  const end = Math.max(...segments.map((s) => s.guestAddress + s.bytes.length + s.zeroFill));
  return { kind: 'elf', entry, segments, end };
}

/** One past the last byte the kernel may touch while it starts (decompression included). */
export function kernelEnd(kernel: KernelImage): number {
  return kernel.kind === 'bzImage' ? kernel.loadAddress + kernel.initSize : kernel.end;
}
