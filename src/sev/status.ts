// SEV firmware status codes (AMD SEV API, "Status Codes"), as the kernel exposes them in linux/psp-sev.h.
// Both launch backends report failures through SevFirmwareError so callers see the same names whether the
// real AMD Secure Processor or the simulator refused a command.
import { constant } from '../sys/abi.js';

const HEADER = 'linux/psp-sev.h';

/** Status name -> code. The C names are `SEV_RET_<name>` (the header spells INVALID_CONFIG as INAVLID_CONFIG). */
export const SevStatus = {
  SUCCESS: constant('SEV_RET_SUCCESS', HEADER, 0x00),
  INVALID_PLATFORM_STATE: constant('SEV_RET_INVALID_PLATFORM_STATE', HEADER, 0x01),
  INVALID_GUEST_STATE: constant('SEV_RET_INVALID_GUEST_STATE', HEADER, 0x02),
  INVALID_CONFIG: constant('SEV_RET_INAVLID_CONFIG', HEADER, 0x03),
  INVALID_LEN: constant('SEV_RET_INVALID_LEN', HEADER, 0x04),
  ALREADY_OWNED: constant('SEV_RET_ALREADY_OWNED', HEADER, 0x05),
  INVALID_CERTIFICATE: constant('SEV_RET_INVALID_CERTIFICATE', HEADER, 0x06),
  POLICY_FAILURE: constant('SEV_RET_POLICY_FAILURE', HEADER, 0x07),
  INACTIVE: constant('SEV_RET_INACTIVE', HEADER, 0x08),
  INVALID_ADDRESS: constant('SEV_RET_INVALID_ADDRESS', HEADER, 0x09),
  BAD_SIGNATURE: constant('SEV_RET_BAD_SIGNATURE', HEADER, 0x0a),
  BAD_MEASUREMENT: constant('SEV_RET_BAD_MEASUREMENT', HEADER, 0x0b),
  ASID_OWNED: constant('SEV_RET_ASID_OWNED', HEADER, 0x0c),
  INVALID_ASID: constant('SEV_RET_INVALID_ASID', HEADER, 0x0d),
  WBINVD_REQUIRED: constant('SEV_RET_WBINVD_REQUIRED', HEADER, 0x0e),
  DFFLUSH_REQUIRED: constant('SEV_RET_DFFLUSH_REQUIRED', HEADER, 0x0f),
  INVALID_GUEST: constant('SEV_RET_INVALID_GUEST', HEADER, 0x10),
  INVALID_COMMAND: constant('SEV_RET_INVALID_COMMAND', HEADER, 0x11),
  ACTIVE: constant('SEV_RET_ACTIVE', HEADER, 0x12),
  HWSEV_RET_PLATFORM: constant('SEV_RET_HWSEV_RET_PLATFORM', HEADER, 0x13),
  HWSEV_RET_UNSAFE: constant('SEV_RET_HWSEV_RET_UNSAFE', HEADER, 0x14),
  UNSUPPORTED: constant('SEV_RET_UNSUPPORTED', HEADER, 0x15),
  INVALID_PARAM: constant('SEV_RET_INVALID_PARAM', HEADER, 0x16),
  RESOURCE_LIMIT: constant('SEV_RET_RESOURCE_LIMIT', HEADER, 0x17),
  SECURE_DATA_INVALID: constant('SEV_RET_SECURE_DATA_INVALID', HEADER, 0x18),
} as const;

export type SevStatusName = keyof typeof SevStatus;

const namesByCode = new Map<number, SevStatusName>((Object.entries(SevStatus) as [SevStatusName, number][]).map(([name, code]) => [code, name]));

/** `BAD_MEASUREMENT (0x0b)`; unknown codes keep their number. */
export function describeStatus(code: number): string {
  const hex = `0x${code.toString(16).padStart(2, '0')}`;
  return `${namesByCode.get(code) ?? 'UNKNOWN_STATUS'} (${hex})`;
}

/** A command the SEV firmware (real or simulated) refused: `LAUNCH_SECRET failed: BAD_MEASUREMENT (0x0b)`. */
export class SevFirmwareError extends Error {
  override readonly name = 'SevFirmwareError';
  readonly status: number;
  readonly statusName: string;

  constructor(
    readonly command: string,
    status: number,
    detail?: string,
  ) {
    super(`${command} failed: ${describeStatus(status)}${detail ? ` — ${detail}` : ''}`);
    this.status = status;
    this.statusName = namesByCode.get(status) ?? 'UNKNOWN_STATUS';
  }
}
