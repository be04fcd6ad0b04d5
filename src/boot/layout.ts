// Where everything lives in guest-physical memory. One table so the loader, the e820 map, the ACPI
// tables, the page tables and the firmware all agree (the firmware's copy of these numbers is checked
// against this file by test/boot/firmware.test.ts).
import { MAX_REGION_SIZE } from '../memory/limits.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** Fixed low-memory addresses used before the kernel takes over. */
export const LowMemory = {
  /** Boot GDT (null, null, 32-bit code, 64-bit code = __BOOT_CS 0x10, data = __BOOT_DS 0x18, TSS). */
  gdt: 0x500,
  /** An empty IDT: any exception before the kernel installs its own is a triple fault, which is reported. */
  idt: 0x540,
  /** SEV launch secret page (4 KiB): LAUNCH_SECRET writes here; e820-reserved on a measured launch. */
  launchSecret: 0x5000,
  /** Firmware hand-off block: where the VMM tells the firmware the kernel entry and the zero page. */
  handoff: 0x6000,
  zeroPage: 0x7000,
  /** Initial stack for the BSP in the direct 64-bit entry (grows down, below the page tables). */
  stackTop: 0x8ff0,
  pml4: 0x9000,
  pdpt: 0xa000,
  /** Four page directories, 2 MiB pages, identity-mapping the first 4 GiB. */
  pageDirectories: 0xb000,
  /** End of conventional memory; the kernel treats [0x9fc00, 1 MiB) as the BIOS area. */
  ebdaStart: 0x9fc00,
  cmdline: 0x20000,
  /** ACPI tables; the RSDP is first, at a 16-byte boundary the kernel also scans (0xe0000..0xfffff). */
  acpi: 0xe0000,
  acpiEnd: 0xf0000,
  /** f000:fff0, where a real-mode reboot jumps (src/boot/bios-reset.ts). */
  biosResetVector: 0xffff0,
  highMemory: 0x100000,
} as const;

export const LAUNCH_SECRET_SIZE = 0x1000;

/** The 32-bit MMIO hole: device windows live in [mmioHoleStart, 4 GiB), RAM continues at 4 GiB. */
export const MMIO_HOLE_START = 0xc000_0000;
export const FOUR_GIB = 4 * GiB;

/** virtio-mmio windows, one 4 KiB page each (the virtio-mmio register file is 0x100 + config). */
export const VIRTIO_MMIO_BASE = 0xd000_0000;
export const VIRTIO_MMIO_SIZE = 0x1000;

export const IOAPIC_ADDRESS = 0xfec0_0000;
export const LAPIC_ADDRESS = 0xfee0_0000;
/** KVM_SET_TSS_ADDR needs three pages the guest never uses; just below the firmware ROM as Firecracker does. */
export const TSS_ADDRESS = 0xfffb_d000;

/** The firmware ROM maps the top page below 4 GiB so the reset vector 0xfffffff0 lands in it. */
export const FIRMWARE_SIZE = 0x1000;
export const FIRMWARE_ADDRESS = FOUR_GIB - FIRMWARE_SIZE;

/** Legacy interrupt lines (IOAPIC pins). COM1 is ISA IRQ 4; virtio-mmio devices take 5.. upward. */
export const COM1_IRQ = 4;
export const FIRST_VIRTIO_IRQ = 5;
export const IOAPIC_PINS = 24;

/** Ports of the platform devices the VMM emulates. */
export const Ports = {
  com1: 0x3f8,
  i8042: 0x60,
  /** ACPI hardware-reduced sleep control and status registers (FADT SLEEP_CONTROL_REG / SLEEP_STATUS_REG). */
  acpiSleepControl: 0x600,
  acpiSleepStatus: 0x601,
  /** FADT RESET_REG: the same port and value as the keyboard-controller reset. */
  acpiReset: 0x64,
  acpiResetValue: 0xfe,
} as const;

export interface RamRange {
  guestAddress: number;
  size: number;
}

export const MIN_GUEST_MEMORY_MIB = 64;

/** Guest RAM of `bytes`, split around the MMIO hole: [0, hole) then [4 GiB, ...). */
export function ramRanges(bytes: number): RamRange[] {
  if (!Number.isSafeInteger(bytes) || bytes < MIN_GUEST_MEMORY_MIB * MiB || bytes % (4 * KiB) !== 0) {
    throw new RangeError(`guest memory must be a whole number of pages, at least ${MIN_GUEST_MEMORY_MIB} MiB (got ${bytes} bytes)`);
  }
  const low = Math.min(bytes, MMIO_HOLE_START);
  const ranges = [{ guestAddress: 0, size: low }];
  if (bytes > low) ranges.push({ guestAddress: FOUR_GIB, size: bytes - low });
  return ranges;
}

/** The most guest RAM, in MiB, that can be mapped: the part above 4 GiB is one region, one view. */
export function maxGuestMemoryMiB(): number {
  return Math.floor((MMIO_HOLE_START + MAX_REGION_SIZE) / MiB);
}

/** The end of RAM below the MMIO hole. */
export function lowRamEnd(ranges: readonly RamRange[]): number {
  const first = ranges.find((r) => r.guestAddress === 0);
  if (!first) throw new Error('guest RAM must start at address 0');
  return first.size;
}
