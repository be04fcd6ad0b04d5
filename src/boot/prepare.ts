// From the user's inputs to the complete boot plan: the kernel parsed, the ACPI tables for the
// requested vCPUs and virtio-mmio devices, the command line with what those devices need, and the
// CPU structures of the chosen entry path. No KVM is involved, so a confidential launch can measure
// the result before anything runs.
import { buildAcpiTables, MAX_CPUS, type VirtioMmioSlot } from './acpi/tables.js';
import { biosResetVector } from './bios-reset.js';
import { planBoot, type BootPlan } from './boot-plan.js';
import { directEntryTables } from './boot-tables.js';
import { handoffBlock, loadFirmware } from './firmware.js';
import { parseKernelImage } from './kernel-image.js';
import { withSecretSlot } from '../initramfs/secret-slot.js';
import { FIRST_VIRTIO_IRQ, IOAPIC_PINS, LAUNCH_SECRET_SIZE, LowMemory, MiB, ramRanges, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE, type RamRange } from './layout.js';

export type EntryPath = 'direct' | 'firmware';

export interface BootInputs {
  kernel: Uint8Array;
  initrd?: Uint8Array;
  /** The user's command line, kept as given; device parameters are appended after it. */
  cmdline: string;
  cpus: number;
  memoryMiB: number;
  /** How many virtio-mmio devices the VM has; each gets a window and an interrupt line. */
  virtioDevices: number;
  entry: EntryPath;
  /**
   * A measured (SEV) launch: the launch secret page is reserved in the e820 map and, with an initrd on
   * the firmware entry, the initrd gets a secret slot the firmware fills (initramfs/secret-slot.ts).
   */
  launchSecret?: boolean;
}

export interface PreparedBoot {
  plan: BootPlan;
  ram: RamRange[];
  virtio: VirtioMmioSlot[];
  /** The command line as the guest receives it. */
  cmdline: string;
  entry: EntryPath;
  cpus: number;
}

/** Windows and interrupt lines for `count` virtio-mmio devices, in device order (vda first). */
export function virtioSlots(count: number): VirtioMmioSlot[] {
  const available = IOAPIC_PINS - FIRST_VIRTIO_IRQ;
  if (!Number.isInteger(count) || count < 0 || count > available) throw new RangeError(`${count} virtio devices: at most ${available} fit the IOAPIC`);
  return Array.from({ length: count }, (_, i) => ({ base: VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE, size: VIRTIO_MMIO_SIZE, irq: FIRST_VIRTIO_IRQ + i }));
}

/**
 * `virtio_mmio.device=<size>@<base>:<irq>` for each device, for kernels built with
 * CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES (kernels without it find the devices in the DSDT instead).
 */
export function deviceCmdline(userCmdline: string, slots: readonly VirtioMmioSlot[]): string {
  const params = slots.map((s) => `virtio_mmio.device=${s.size / 1024}K@0x${s.base.toString(16)}:${s.irq}`);
  return [userCmdline, ...params].filter((p) => p.length > 0).join(' ');
}

export async function prepareBoot(inputs: BootInputs): Promise<PreparedBoot> {
  if (!Number.isInteger(inputs.cpus) || inputs.cpus < 1 || inputs.cpus > MAX_CPUS) throw new RangeError(`--cpus must be 1..${MAX_CPUS}, got ${inputs.cpus}`);
  if (!Number.isInteger(inputs.memoryMiB) || inputs.memoryMiB < 64)
    throw new RangeError(`--mem must be a whole number of MiB, at least 64, got ${inputs.memoryMiB}`);
  const ram = ramRanges(inputs.memoryMiB * MiB);
  const kernel = parseKernelImage(inputs.kernel);
  const virtio = virtioSlots(inputs.virtioDevices);
  const acpi = buildAcpiTables({ cpus: inputs.cpus, virtio });
  const cmdline = deviceCmdline(inputs.cmdline, virtio);
  const extra = [...acpi.placements, biosResetVector()];
  const firmware = inputs.entry === 'firmware';
  if (firmware) extra.push(await loadFirmware());
  else extra.push(...directEntryTables());
  const slotted = firmware && inputs.launchSecret && inputs.initrd ? await withSecretSlot(inputs.initrd, LAUNCH_SECRET_SIZE) : undefined;
  const plan = planBoot({
    kernel,
    initrd: slotted?.initrd ?? inputs.initrd,
    cmdline,
    ram,
    rsdp: acpi.rsdp,
    extra,
    firmware,
    launchSecret: inputs.launchSecret,
  });
  if (firmware) {
    // The hand-off block names the slot by guest address, known once the initrd is placed.
    const slot = slotted && plan.initrd ? { guestAddress: plan.initrd.guestAddress + slotted.slotOffset, length: LAUNCH_SECRET_SIZE } : undefined;
    plan.placements.push(handoffBlock(kernel.entry, LowMemory.zeroPage, slot));
  }
  return { plan, ram, virtio, cmdline, entry: inputs.entry, cpus: inputs.cpus };
}
