// The guest's physical memory map as the kernel reads it from the zero page.
import { E820Type } from './boot-params-abi.js';
import { FIRMWARE_ADDRESS, FIRMWARE_SIZE, LAUNCH_SECRET_SIZE, LowMemory, type RamRange } from './layout.js';

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/**
 * RAM as usable except the legacy BIOS area [0x9fc00, 1 MiB), which holds the ACPI tables and stays
 * reserved as on a PC; the firmware ROM page is reserved when present, and so is the SEV launch secret
 * page on a measured launch (the firmware writes the owner's secret there; the kernel must not use it).
 * Sorted, non-overlapping.
 */
export function e820Map(ram: readonly RamRange[], options: { firmware: boolean; launchSecret?: boolean }): E820Entry[] {
  const entries: E820Entry[] = [];
  for (const r of ram) {
    const end = r.guestAddress + r.size;
    if (r.guestAddress === 0) {
      if (end <= LowMemory.highMemory) throw new RangeError('guest RAM below 1 MiB only: the kernel cannot be loaded');
      if (options.launchSecret) {
        const secretEnd = LowMemory.launchSecret + LAUNCH_SECRET_SIZE;
        entries.push({ addr: 0, size: LowMemory.launchSecret, type: E820Type.RAM });
        entries.push({ addr: LowMemory.launchSecret, size: LAUNCH_SECRET_SIZE, type: E820Type.RESERVED });
        entries.push({ addr: secretEnd, size: LowMemory.ebdaStart - secretEnd, type: E820Type.RAM });
      } else {
        entries.push({ addr: 0, size: LowMemory.ebdaStart, type: E820Type.RAM });
      }
      entries.push({ addr: LowMemory.ebdaStart, size: LowMemory.highMemory - LowMemory.ebdaStart, type: E820Type.RESERVED });
      entries.push({ addr: LowMemory.highMemory, size: end - LowMemory.highMemory, type: E820Type.RAM });
    } else {
      entries.push({ addr: r.guestAddress, size: r.size, type: E820Type.RAM });
    }
  }
  if (options.firmware) entries.push({ addr: FIRMWARE_ADDRESS, size: FIRMWARE_SIZE, type: E820Type.RESERVED });
  return entries.sort((a, b) => a.addr - b.addr);
}
