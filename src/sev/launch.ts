// The measured SEV launch of a ts-vmm guest, and the guest owner's prediction of it. Both walk the same
// list (measuredRanges) over the same bytes, so a launch and its prediction agree by construction.
//
// Order of measurement (by kind, then in the order the VMM listed regions of the same kind):
//   firmware, kernel, initrd, zero-page, cmdline, acpi, boot-data (GDT, page tables, firmware hand-off block)
// Each region is widened to 16-byte boundaries (LAUNCH_UPDATE_DATA works on 16-byte blocks); widened
// regions must not overlap, since on hardware each LAUNCH_UPDATE_DATA encrypts its bytes in place and a
// second pass would encrypt them twice. SEV-ES VMSAs (one page per vCPU, boot CPU first) follow the data.
// The secret lands in SEV_SECRET_PAGE, which the VMM reserves in the e820 map and does not measure.
import { createHash } from 'node:crypto';
import { LAUNCH_SECRET_SIZE, LowMemory } from '../boot/layout.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { SevLaunchBackend } from './firmware.js';
import { PolicyBit } from './policy.js';
import type { SecretPacket } from './secret.js';

export const MEASUREMENT_ORDER = ['firmware', 'kernel', 'initrd', 'zero-page', 'cmdline', 'acpi', 'boot-data'] as const;
export type RegionKind = (typeof MEASUREMENT_ORDER)[number];

/**
 * Guest-physical page (4 KiB) that receives the LAUNCH_SECRET payload, in the free low memory below the
 * firmware hand-off block (0x6000) and the zero page (0x7000). The VMM marks it reserved in the e820 map.
 */
export const SEV_SECRET_PAGE = LowMemory.launchSecret;
export const SEV_SECRET_PAGE_SIZE = LAUNCH_SECRET_SIZE;

/** Bytes the VMM placed in guest memory before launch. */
export interface PlacedRegion {
  kind: RegionKind;
  guestAddress: number;
  length: number;
}

/** A region as LAUNCH_UPDATE_DATA receives it: 16-byte aligned start and length. */
export interface MeasuredRange {
  kind: RegionKind;
  guestAddress: number;
  length: number;
}

export class LaunchLayoutError extends Error {
  override readonly name = 'LaunchLayoutError';
}

const hex = (n: number) => `0x${n.toString(16)}`;

/** The ranges to measure, in measurement order, aligned and checked against each other and guest memory. */
export function measuredRanges(regions: readonly PlacedRegion[], memory: GuestMemory): MeasuredRange[] {
  for (const r of regions) {
    if (!(MEASUREMENT_ORDER as readonly string[]).includes(r.kind)) throw new LaunchLayoutError(`unknown region kind "${r.kind}"`);
  }
  const ranges: MeasuredRange[] = [];
  for (const kind of MEASUREMENT_ORDER) {
    for (const r of regions) {
      if (r.kind !== kind || r.length === 0) continue;
      if (!Number.isSafeInteger(r.guestAddress) || !Number.isSafeInteger(r.length) || r.guestAddress < 0 || r.length < 0) {
        throw new LaunchLayoutError(`${kind} region ${hex(r.guestAddress)}+${hex(r.length)} is not a valid range`);
      }
      const start = Math.floor(r.guestAddress / 16) * 16;
      const end = Math.ceil((r.guestAddress + r.length) / 16) * 16;
      if (!memory.contains(start, end - start)) throw new LaunchLayoutError(`${kind} region ${hex(start)}..${hex(end)} is not inside guest RAM`);
      ranges.push({ kind, guestAddress: start, length: end - start });
    }
  }
  const byAddress = [...ranges].sort((a, b) => a.guestAddress - b.guestAddress);
  for (let i = 1; i < byAddress.length; i++) {
    const prev = byAddress[i - 1]!;
    const cur = byAddress[i]!;
    if (cur.guestAddress < prev.guestAddress + prev.length) {
      throw new LaunchLayoutError(
        `${prev.kind} ${hex(prev.guestAddress)}+${hex(prev.length)} and ${cur.kind} ${hex(cur.guestAddress)}+${hex(cur.length)} overlap once aligned to 16 bytes`,
      );
    }
  }
  const secretEnd = SEV_SECRET_PAGE + SEV_SECRET_PAGE_SIZE;
  for (const r of ranges) {
    if (r.guestAddress < secretEnd && SEV_SECRET_PAGE < r.guestAddress + r.length) {
      throw new LaunchLayoutError(`${r.kind} ${hex(r.guestAddress)}+${hex(r.length)} overlaps the secret page ${hex(SEV_SECRET_PAGE)}`);
    }
  }
  return ranges;
}

/** What the firmware's running digest becomes over these ranges and VMSAs: the launch digest. */
export function launchDigest(memory: GuestMemory, ranges: readonly MeasuredRange[], vmsas: readonly Uint8Array[] = []): Buffer {
  const hash = createHash('sha256');
  for (const r of ranges) hash.update(memory.slice(r.guestAddress, r.length));
  for (const v of vmsas) hash.update(v);
  return hash.digest();
}

/** A guest image laid out in memory, before launch: what the boot code builds for both launch and prediction. */
export interface LaunchImage {
  memory: GuestMemory;
  regions: readonly PlacedRegion[];
  /** SEV-ES: the VMSA page of every vCPU, boot CPU first. */
  vmsas?: readonly Uint8Array[];
}

/** The guest owner's prediction: the launch digest of an image (to be MACed into the measurement with the TIK). */
export function predictLaunchDigest(image: LaunchImage): Buffer {
  return launchDigest(image.memory, measuredRanges(image.regions, image.memory), image.vmsas ?? []);
}

/** Called with MEASURE || MNONCE; answers with the secret to inject, or nothing. */
export type SecretSource = (measurement: Uint8Array) => Promise<SecretPacket | undefined> | SecretPacket | undefined;

export interface MeasuredLaunchOptions {
  backend: SevLaunchBackend;
  image: LaunchImage;
  policy: number;
  /** The guest owner's GODH certificate and session blob; without them the launch cannot be attested. */
  session?: { godh: Uint8Array; session: Uint8Array };
  secret?: SecretSource;
  /**
   * Creates the vCPUs and sets their registers. Called after the data is measured and before
   * LAUNCH_UPDATE_VMSA: KVM wants SEV initialised before any vCPU exists, and for SEV-ES builds each
   * VMSA from its vCPU's registers.
   */
  createVcpus?: () => Promise<void> | void;
  /** INIT was already issued when the VM was created (KVM refuses it once vCPUs exist), so skip it here. */
  initialized?: boolean;
}

export interface MeasuredLaunchResult {
  handle: number;
  /** MEASURE[32] || MNONCE[16] as the firmware reported it. */
  measurement: Uint8Array;
  secretInjected: boolean;
}

/**
 * INIT -> LAUNCH_START -> LAUNCH_UPDATE_DATA per range -> (vCPUs created) -> (LAUNCH_UPDATE_VMSA) -> LAUNCH_MEASURE
 * -> LAUNCH_SECRET -> LAUNCH_FINISH. Call it once the boot plan is in guest memory and before any vCPU exists.
 */
export async function measuredLaunch(options: MeasuredLaunchOptions): Promise<MeasuredLaunchResult> {
  const { backend, image, policy } = options;
  const encryptedState = (policy & PolicyBit.ES) !== 0;
  const vmsas = image.vmsas ?? [];
  if (encryptedState && vmsas.length === 0) throw new LaunchLayoutError('an SEV-ES policy needs the VMSA of every vCPU');
  if (!encryptedState && vmsas.length > 0) throw new LaunchLayoutError('VMSAs are measured only for an SEV-ES policy (bit 2)');
  const ranges = measuredRanges(image.regions, image.memory);

  if (!options.initialized) backend.init(encryptedState);
  const handle = backend.launchStart({ policy, godh: options.session?.godh, session: options.session?.session });
  for (const r of ranges) backend.launchUpdateData(image.memory, r.guestAddress, r.length);
  await options.createVcpus?.();
  if (encryptedState) backend.launchUpdateVmsa(vmsas);
  const measurement = backend.launchMeasure();
  const packet = options.secret ? await options.secret(measurement) : undefined;
  if (packet) {
    if (packet.payload.length > SEV_SECRET_PAGE_SIZE)
      throw new LaunchLayoutError(`secret payload of ${packet.payload.length} bytes exceeds the ${SEV_SECRET_PAGE_SIZE}-byte secret page`);
    backend.launchSecret(packet, image.memory, SEV_SECRET_PAGE);
  }
  backend.launchFinish();
  return { handle, measurement, secretInjected: packet !== undefined };
}
