// The legacy BIOS reset vector, f000:fff0 = 0xffff0. There is no BIOS, but Linux still jumps there to
// reboot: on a hardware-reduced ACPI platform it prefers an EFI reset, and without EFI it falls back to
// machine_real_restart(), which enters real mode at f000:fff0 expecting BIOS code that resets the
// machine. These bytes do what that code does: pulse reset through the keyboard controller.
import type { Placement } from './boot-plan.js';
import { LowMemory, Ports } from './layout.js';

export function biosResetVector(): Placement {
  // mov $0xfe, %al; 1: out %al, $0x64; hlt; jmp 1b   (16-bit code)
  const bytes = Uint8Array.of(0xb0, Ports.acpiResetValue, 0xe6, Ports.i8042 + 4, 0xf4, 0xeb, 0xfb);
  return { what: 'BIOS reset vector', guestAddress: LowMemory.biosResetVector, bytes };
}
