// A ts-vmm guest as SEV measures it: the boot plan (src/boot) lists every byte the VMM places in guest
// memory before the first vCPU runs; this module names each placement's measurement kind and builds the
// launch image. `ts-vmm boot --tee` launches that image and `ts-vmm sev measurement build --ts-vmm` predicts
// it from the same inputs through the same functions, so the two agree by construction.
import type { BootPlan, Placement } from '../boot/boot-plan.js';
import { FIRMWARE_ADDRESS, FIRMWARE_SIZE } from '../boot/layout.js';
import { prepareBoot, type BootInputs } from '../boot/prepare.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { predictLaunchDigest, type LaunchImage, type PlacedRegion, type RegionKind } from './launch.js';

/** The measurement kind of one boot placement (the boot plan names them; anything else is boot data). */
export function placementKind(p: Placement): RegionKind {
  if (p.what === 'firmware') return 'firmware';
  if (p.what === 'kernel' || p.what.startsWith('kernel segment ')) return 'kernel';
  if (p.what === 'initrd') return 'initrd';
  if (p.what === 'zero page') return 'zero-page';
  if (p.what === 'command line') return 'cmdline';
  if (p.what.startsWith('ACPI ')) return 'acpi';
  return 'boot-data';
}

export function bootPlanRegions(plan: BootPlan): PlacedRegion[] {
  return plan.placements.map((p) => ({ kind: placementKind(p), guestAddress: p.guestAddress, length: p.bytes.length }));
}

export type MeasuredBootInputs = Omit<BootInputs, 'entry' | 'launchSecret'>;

/**
 * A measured launch always enters through the ts-vmm firmware (its page tables carry the C-bit; the direct
 * 64-bit entry's tables would not) and reserves the launch secret page: the boot and its prediction both
 * take their boot inputs from here.
 */
export function measuredBootInputs(inputs: MeasuredBootInputs): BootInputs {
  return { ...inputs, entry: 'firmware', launchSecret: true };
}

/** The guest owner's view: the launch image of a ts-vmm boot from its inputs, in memory that no VM uses. */
export async function tsVmmLaunchImage(inputs: MeasuredBootInputs): Promise<LaunchImage> {
  const boot = await prepareBoot(measuredBootInputs(inputs));
  const rom = boot.entry === 'firmware' ? [{ guestAddress: FIRMWARE_ADDRESS, size: FIRMWARE_SIZE }] : [];
  const memory = GuestMemory.shared([...boot.ram, ...rom]);
  for (const p of boot.plan.placements) memory.write(p.guestAddress, p.bytes);
  return { memory, regions: bootPlanRegions(boot.plan) };
}

export async function predictTsVmmLaunchDigest(inputs: MeasuredBootInputs): Promise<Buffer> {
  return predictLaunchDigest(await tsVmmLaunchImage(inputs));
}
