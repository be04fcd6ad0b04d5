// Everything the VMM places in guest memory before the first vCPU runs, as one explicit list: the
// kernel, the initrd, the command line, the zero page, the ACPI tables, the boot page tables and GDT,
// and (on the firmware path) the firmware and its hand-off block. A confidential launch measures
// exactly this list; a plain launch copies it into RAM with `placeBootPlan`.
import type { GuestMemory } from '../memory/guest-memory.js';
import { BootFlags, E820_MAX_ENTRIES_ZEROPAGE, ZeroPage, bootE820Entry } from './boot-params-abi.js';
import { e820Map, type E820Entry } from './e820.js';
import { kernelEnd, KernelImageError, type KernelImage } from './kernel-image.js';
import { LowMemory, lowRamEnd, type RamRange } from './layout.js';

export interface Placement {
  /** What the bytes are, for error messages and the measurement log. */
  what: string;
  guestAddress: number;
  bytes: Uint8Array;
}

export interface BootPlan {
  placements: Placement[];
  /** Where the BSP enters the kernel in 64-bit mode (rsi = zeroPage). */
  kernelEntry: number;
  zeroPage: number;
  e820: E820Entry[];
  initrd?: { guestAddress: number; size: number };
}

export interface BootPlanInput {
  kernel: KernelImage;
  initrd?: Uint8Array;
  cmdline: string;
  ram: readonly RamRange[];
  /** Guest address of the RSDP. */
  rsdp: number;
  /** Tables already laid out at their guest addresses (ACPI, page tables, GDT, firmware...). */
  extra: readonly Placement[];
  firmware: boolean;
  /** Reserve the SEV launch secret page in the e820 map (a measured launch). */
  launchSecret?: boolean;
}

/** vmlinux has no setup header to say so; this is the kernel's own COMMAND_LINE_SIZE minus the NUL. */
const ELF_CMDLINE_MAX = 2047;
const PAGE = 4096;

export function planBoot(input: BootPlanInput): BootPlan {
  const { kernel, ram } = input;
  const lowEnd = lowRamEnd(ram);
  const kEnd = kernelEnd(kernel);
  const kStart = Math.min(...kernel.segments.map((s) => s.guestAddress));
  if (kStart < LowMemory.highMemory) throw new KernelImageError(`kernel loads at 0x${kStart.toString(16)}, below 1 MiB where the boot structures live`);
  if (kEnd > lowEnd) {
    throw new KernelImageError(
      `guest memory too small: the kernel needs RAM up to 0x${kEnd.toString(16)} but RAM below the MMIO hole ends at 0x${lowEnd.toString(16)}`,
    );
  }

  const cmdlineBytes = new TextEncoder().encode(`${input.cmdline}\0`);
  const cmdlineMax = kernel.kind === 'bzImage' ? kernel.cmdlineMax : ELF_CMDLINE_MAX;
  if (cmdlineBytes.length - 1 > cmdlineMax)
    throw new KernelImageError(`command line is ${cmdlineBytes.length - 1} bytes; this kernel accepts at most ${cmdlineMax}`);
  if (cmdlineBytes.indexOf(0) !== cmdlineBytes.length - 1) throw new KernelImageError('command line contains a NUL character');

  const placements: Placement[] = kernel.segments.map((s, i) => ({
    what: kernel.segments.length > 1 ? `kernel segment ${i}` : 'kernel',
    guestAddress: s.guestAddress,
    bytes: s.bytes,
  }));
  placements.push({ what: 'command line', guestAddress: LowMemory.cmdline, bytes: cmdlineBytes });

  let initrd: BootPlan['initrd'];
  if (input.initrd) {
    // As high as allowed below the MMIO hole, page aligned, so it never meets the decompressing kernel.
    const ceiling = Math.min(lowEnd, kernel.kind === 'bzImage' ? kernel.initrdAddrMax + 1 : lowEnd);
    const address = Math.floor((ceiling - input.initrd.length) / PAGE) * PAGE;
    if (address < kEnd) {
      throw new KernelImageError(
        `guest memory too small for the initrd (${input.initrd.length} bytes) above the kernel (ends at 0x${kEnd.toString(16)}) and below 0x${ceiling.toString(16)}`,
      );
    }
    initrd = { guestAddress: address, size: input.initrd.length };
    placements.push({ what: 'initrd', guestAddress: address, bytes: input.initrd });
  }

  const e820 = e820Map(ram, { firmware: input.firmware, launchSecret: input.launchSecret });
  const zeroPage = buildZeroPage({ kernel, e820, rsdp: input.rsdp, initrd });
  placements.push({ what: 'zero page', guestAddress: LowMemory.zeroPage, bytes: zeroPage });
  placements.push(...input.extra);
  assertNoOverlap(placements, kernel);
  return { placements, kernelEntry: kernel.entry, zeroPage: LowMemory.zeroPage, e820, initrd };
}

function buildZeroPage(p: { kernel: KernelImage; e820: E820Entry[]; rsdp: number; initrd: BootPlan['initrd'] }): Uint8Array {
  const page = new Uint8Array(ZeroPage.size);
  const v = new DataView(page.buffer);
  if (p.kernel.kind === 'bzImage') {
    page.set(p.kernel.setupHeader, ZeroPage.hdr('setup_sects'));
  } else {
    // vmlinux carries no setup header: write the fields the kernel checks on entry.
    v.setUint16(ZeroPage.hdr('boot_flag'), BootFlags.bootFlagMagic, true);
    v.setUint32(ZeroPage.hdr('header'), BootFlags.headerMagic, true);
    v.setUint32(ZeroPage.hdr('kernel_alignment'), 0x20_0000, true);
  }
  v.setUint8(ZeroPage.hdr('type_of_loader'), BootFlags.loaderTypeUndefined);
  v.setUint32(ZeroPage.hdr('cmd_line_ptr'), LowMemory.cmdline, true);
  v.setUint32(ZeroPage.extCmdLinePtr, 0, true);
  if (p.initrd) {
    v.setUint32(ZeroPage.hdr('ramdisk_image'), p.initrd.guestAddress, true);
    v.setUint32(ZeroPage.hdr('ramdisk_size'), p.initrd.size % 2 ** 32, true);
    v.setUint32(ZeroPage.extRamdiskSize, Math.floor(p.initrd.size / 2 ** 32), true);
  }
  v.setBigUint64(ZeroPage.acpiRsdpAddr, BigInt(p.rsdp), true);
  if (p.e820.length > E820_MAX_ENTRIES_ZEROPAGE) throw new RangeError(`${p.e820.length} e820 entries do not fit the zero page`);
  v.setUint8(ZeroPage.e820Entries, p.e820.length);
  p.e820.forEach((e, i) => {
    const at = ZeroPage.e820Table + i * bootE820Entry.size;
    v.setBigUint64(at, BigInt(e.addr), true);
    v.setBigUint64(at + 8, BigInt(e.size), true);
    v.setUint32(at + 16, e.type, true);
  });
  return page;
}

function assertNoOverlap(placements: readonly Placement[], kernel: KernelImage): void {
  // The decompressing kernel owns [load, load + init_size), not just the bytes of the file.
  const spans = placements.map((p) => ({ what: p.what, start: p.guestAddress, end: p.guestAddress + p.bytes.length }));
  if (kernel.kind === 'bzImage') spans.push({ what: 'kernel decompression area', start: kernel.loadAddress, end: kernel.loadAddress + kernel.initSize });
  spans.sort((a, b) => a.start - b.start);
  for (let i = 1; i < spans.length; i++) {
    const a = spans[i - 1]!;
    const b = spans[i]!;
    if (b.start < a.end && !(a.what.startsWith('kernel') && b.what.startsWith('kernel'))) {
      throw new KernelImageError(`${b.what} at 0x${b.start.toString(16)} overlaps ${a.what} (ends 0x${a.end.toString(16)})`);
    }
  }
}

/** Copies every placement into guest RAM (the plain, unmeasured launch). */
export function placeBootPlan(memory: GuestMemory, plan: BootPlan): void {
  for (const p of plan.placements) {
    if (!memory.contains(p.guestAddress, p.bytes.length)) {
      throw new KernelImageError(`${p.what} at 0x${p.guestAddress.toString(16)}+0x${p.bytes.length.toString(16)} is outside guest memory`);
    }
    memory.write(p.guestAddress, p.bytes);
  }
}
