// What a SEV firmware offers ts-vmm, independent of who implements it: the AMD Secure Processor through
// /dev/sev and KVM (psp.ts, kvm-sev.ts) or the software model (sev-sim.ts). Failures are SevFirmwareError
// carrying the firmware's status code.
import type { GuestMemory } from '../memory/guest-memory.js';
import type { SecretPacket } from './secret.js';
import type { SevCertificate } from './sev-certificate.js';

export const PlatformState = ['UNINIT', 'INIT', 'WORKING'] as const;
export type PlatformStateName = (typeof PlatformState)[number];

export interface PlatformStatus {
  apiMajor: number;
  apiMinor: number;
  build: number;
  state: PlatformStateName | `state ${number}`;
  /** Raw flags; bit 8 (CONFIG_ES) says SEV-ES guests are possible. */
  flags: number;
  guestCount: number;
}

/** Guest states of the AMD SEV API ("Guest State Machine"), by their numeric value. */
export const GuestState = ['UNINIT', 'LUPDATE', 'LSECRET', 'RUNNING', 'SUPDATE', 'RUPDATE', 'SENT'] as const;
export type GuestStateName = (typeof GuestState)[number];

export interface GuestStatus {
  handle: number;
  policy: number;
  state: GuestStateName | `state ${number}`;
}

export function guestStateName(value: number): GuestStatus['state'] {
  return GuestState[value] ?? `state ${value}`;
}

export function platformStateName(value: number): PlatformStatus['state'] {
  return PlatformState[value] ?? `state ${value}`;
}

/** Platform commands the guest owner's tools need (PDH_CERT_EXPORT to start a session). */
export interface SevPlatform {
  platformStatus(): PlatformStatus;
  /** The PDH and the chain that vouches for it as the firmware exports it: PEK || OCA || CEK. */
  pdhCertExport(): { pdh: SevCertificate; chain: Uint8Array };
  /** An unsigned PEK certificate for the platform owner to sign (re-own with an OCA). */
  pekCsr(): Uint8Array;
  /** The chip's unique ID (to fetch its CEK from AMD's key server). */
  getId(): Uint8Array;
}

export interface LaunchStart {
  policy: number;
  /** The guest owner's DH certificate (0x824 bytes) and session blob (128 bytes); both or neither. */
  godh?: Uint8Array;
  session?: Uint8Array;
}

/** The launch commands of one guest, in the order the firmware accepts them. */
export interface SevLaunchBackend {
  /** `sev` (hardware) or `sev-sim` (software model, no memory encryption). */
  readonly kind: 'sev' | 'sev-sim';
  readonly platform: SevPlatform;
  /** KVM_SEV_INIT or KVM_SEV_ES_INIT for this VM. */
  init(encryptedState: boolean): void;
  /** Returns the guest handle. */
  launchStart(start: LaunchStart): number;
  /** Measures (and on hardware encrypts in place) guest memory; address and length 16-byte aligned. */
  launchUpdateData(memory: GuestMemory, guestAddress: number, length: number): void;
  /**
   * SEV-ES: measures and encrypts the VMSA of every vCPU. On hardware KVM builds them from the vCPU registers
   * the VMM set; the simulator measures the pages given here, which must be those same VMSAs.
   */
  launchUpdateVmsa(vmsas: readonly Uint8Array[]): void;
  /** MEASURE[32] || MNONCE[16]. */
  launchMeasure(): Uint8Array;
  /** Decrypts a secret packet into guest memory at a 16-byte aligned address. */
  launchSecret(packet: SecretPacket, memory: GuestMemory, guestAddress: number): void;
  launchFinish(): void;
  guestStatus(): GuestStatus;
}
