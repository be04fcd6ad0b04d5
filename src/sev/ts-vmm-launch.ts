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

/** The guest owner's view: the launch image of a ts-vmm boot from its inputs, in memory that no VM uses. */
export async function tsVmmLaunchImage(inputs: BootInputs): Promise<LaunchImage> {
  const boot = await prepareBoot(inputs);
  const rom = boot.entry === 'firmware' ? [{ guestAddress: FIRMWARE_ADDRESS, size: FIRMWARE_SIZE }] : [];
  const memory = GuestMemory.shared([...boot.ram, ...rom]);
  for (const p of boot.plan.placements) memory.write(p.guestAddress, p.bytes);
  return { memory, regions: bootPlanRegions(boot.plan) };
}

export async function predictTsVmmLaunchDigest(inputs: BootInputs): Promise<Buffer> {
  return predictLaunchDigest(await tsVmmLaunchImage(inputs));
}
