// How an I/O or MMIO exit reaches a device: one bus access per element (string I/O repeats the
// access `count` times), and a fixed answer where no device claims the address.
import type { Bus } from '../devices/bus.js';

/** What an unclaimed read returns: all ones, like a PC bus with nothing driving it. */
export const FLOATING_BUS = 0xff;

/**
 * Performs `count` accesses of `size` bytes at `address` on `bus`, reading into or writing from
 * consecutive `size`-byte slices of `data`. Returns false when no device claims the address.
 */
export function busAccess(bus: Bus, address: number, isWrite: boolean, size: number, count: number, data: Uint8Array): boolean {
  if (count === 1 && data.length === size) {
    if (isWrite) return bus.write(address, data);
    if (bus.read(address, data)) return true;
    data.fill(FLOATING_BUS);
    return false;
  }
  let claimed = true;
  for (let i = 0; i < count; i++) {
    const element = data.subarray(i * size, (i + 1) * size);
    if (isWrite) claimed = bus.write(address, element) && claimed;
    else if (!bus.read(address, element)) {
      element.fill(FLOATING_BUS);
      claimed = false;
    }
  }
  return claimed;
}
