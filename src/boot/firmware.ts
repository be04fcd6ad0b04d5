// The firmware entry path: the ROM image from firmware/ (built from firmware/reset.s) mapped at the
// top of 4 GiB, and the hand-off block that tells it where the kernel's 64-bit entry and the zero
// page are. Both are placements, so a measured launch covers them like the kernel itself.
import { readFile } from 'node:fs/promises';
import { projectFile } from '../sys/project-paths.js';
import type { Placement } from './boot-plan.js';
import { FIRMWARE_ADDRESS, FIRMWARE_SIZE, LowMemory } from './layout.js';

export const FIRMWARE_IMAGE = projectFile('firmware', 'ts-vmm-firmware.bin');

/** "TSFW", the first word of the hand-off block; the firmware refuses to jump without it. */
export const HANDOFF_MAGIC = 0x5746_5354;
const HANDOFF_VERSION = 2;
const HANDOFF_SIZE = 40;

/** Where the firmware copies the launch secret page before it clears it (firmware/reset.s). */
export interface SecretSlot {
  guestAddress: number;
  length: number;
}

/**
 * The block the firmware reads at LowMemory.handoff: magic, version, the kernel's 64-bit entry, the
 * zero page, and (version 2) the secret slot, zero when there is none. It is measured with the rest.
 */
export function handoffBlock(kernelEntry: number, zeroPage: number, secretSlot?: SecretSlot): Placement {
  const bytes = new Uint8Array(HANDOFF_SIZE);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, HANDOFF_MAGIC, true);
  v.setUint32(4, HANDOFF_VERSION, true);
  v.setBigUint64(8, BigInt(kernelEntry), true);
  v.setBigUint64(16, BigInt(zeroPage), true);
  v.setBigUint64(24, BigInt(secretSlot?.guestAddress ?? 0), true);
  v.setUint32(32, secretSlot?.length ?? 0, true);
  return { what: 'firmware hand-off block', guestAddress: LowMemory.handoff, bytes };
}

export async function loadFirmware(path: URL | string = FIRMWARE_IMAGE): Promise<Placement> {
  const bytes = new Uint8Array(await readFile(path));
  if (bytes.length !== FIRMWARE_SIZE) throw new Error(`firmware image ${String(path)} is ${bytes.length} bytes; the ROM is exactly ${FIRMWARE_SIZE}`);
  return { what: 'firmware', guestAddress: FIRMWARE_ADDRESS, bytes };
}
