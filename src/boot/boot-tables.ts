// The CPU structures for entering the kernel directly in 64-bit mode: a GDT with the selectors the
// 64-bit boot protocol requires (__BOOT_CS = 0x10, __BOOT_DS = 0x18), an empty IDT, and page tables
// identity-mapping the first 4 GiB with 2 MiB pages (the protocol needs the kernel, zero page and
// command line mapped; 4 GiB also covers the initrd and the MMIO hole).
import type { Placement } from './boot-plan.js';
import { LowMemory } from './layout.js';

export interface SegmentDescriptor {
  selector: number;
  base: number;
  limit: number;
  /** Access byte (type, S, DPL, P) in bits 0-7, flags (AVL, L, D/B, G) in bits 12-15, as in the descriptor. */
  flags: number;
}

const flat = (selector: number, flags: number): SegmentDescriptor => ({ selector, base: 0, limit: 0xfffff, flags });

export const BootSegments = {
  code32: flat(0x08, 0xc09b),
  code64: flat(0x10, 0xa09b),
  data: flat(0x18, 0xc093),
  /** A busy 64-bit TSS (two GDT slots): VM entry checks that TR is usable. */
  tss: { selector: 0x20, base: 0, limit: 0x67, flags: 0x008b },
} as const;

export function encodeDescriptor(d: SegmentDescriptor): bigint {
  const base = BigInt(d.base);
  const limit = BigInt(d.limit);
  const flags = BigInt(d.flags);
  return ((base & 0xff00_0000n) << 32n) | ((flags & 0xf0ffn) << 40n) | ((limit & 0xf_0000n) << 32n) | ((base & 0x00ff_ffffn) << 16n) | (limit & 0xffffn);
}

const GDT_SLOTS = 6;
export const GDT_LIMIT = GDT_SLOTS * 8 - 1;
export const IDT_LIMIT = 0;

function gdt(): Uint8Array {
  const bytes = new Uint8Array(GDT_SLOTS * 8);
  const v = new DataView(bytes.buffer);
  for (const d of [BootSegments.code32, BootSegments.code64, BootSegments.data, BootSegments.tss]) {
    v.setBigUint64(d.selector, encodeDescriptor(d), true);
  }
  return bytes;
}

const PRESENT = 1n;
const WRITABLE = 2n;
const PAGE_SIZE_2M = 0x80n;
const TWO_MIB = 0x20_0000n;

function pageTables(): Placement[] {
  const pml4 = new Uint8Array(4096);
  const pdpt = new Uint8Array(4096);
  const pds = new Uint8Array(4 * 4096);
  new DataView(pml4.buffer).setBigUint64(0, BigInt(LowMemory.pdpt) | PRESENT | WRITABLE, true);
  const pdptView = new DataView(pdpt.buffer);
  for (let i = 0; i < 4; i++) pdptView.setBigUint64(i * 8, BigInt(LowMemory.pageDirectories + i * 4096) | PRESENT | WRITABLE, true);
  const pdView = new DataView(pds.buffer);
  for (let i = 0; i < 4 * 512; i++) pdView.setBigUint64(i * 8, (BigInt(i) * TWO_MIB) | PRESENT | WRITABLE | PAGE_SIZE_2M, true);
  return [
    { what: 'PML4', guestAddress: LowMemory.pml4, bytes: pml4 },
    { what: 'PDPT', guestAddress: LowMemory.pdpt, bytes: pdpt },
    { what: 'page directories', guestAddress: LowMemory.pageDirectories, bytes: pds },
  ];
}

/** The GDT, IDT and page tables for the direct 64-bit entry. */
export function directEntryTables(): Placement[] {
  return [{ what: 'GDT', guestAddress: LowMemory.gdt, bytes: gdt() }, { what: 'IDT', guestAddress: LowMemory.idt, bytes: new Uint8Array(8) }, ...pageTables()];
}
