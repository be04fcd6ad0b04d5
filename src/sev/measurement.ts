// The launch measurement (AMD SEV API, "LAUNCH_MEASURE"): the firmware proves to the guest owner, under the
// TIK only the owner and the firmware know, what it loaded:
//   MEASURE = HMAC-SHA256(TIK, 0x04 || API_MAJOR || API_MINOR || BUILD || GCTX.POLICY (u32 LE) || GCTX.LD || MNONCE)
// where LD is the launch digest (SHA-256 of everything LAUNCH_UPDATE_DATA/VMSA measured). The firmware
// returns MEASURE[32] || MNONCE[16].
import { timingSafeEqual } from 'node:crypto';
import { hmacSha256 } from './kdf.js';
import { policyBytes } from './policy.js';

export const MEASUREMENT_SIZE = 48;

/** Firmware API version and build, as PLATFORM_STATUS reports them. */
export interface FirmwareBuild {
  apiMajor: number;
  apiMinor: number;
  build: number;
}

export interface Measurement {
  measure: Uint8Array;
  mnonce: Uint8Array;
}

export function encodeMeasurement(m: Measurement): Buffer {
  if (m.measure.length !== 32 || m.mnonce.length !== 16) throw new RangeError('measure is 32 bytes and mnonce 16');
  return Buffer.concat([m.measure, m.mnonce]);
}

export function parseMeasurement(bytes: Uint8Array): Measurement {
  if (bytes.length !== MEASUREMENT_SIZE) throw new RangeError(`launch measurement is ${bytes.length} bytes, expected ${MEASUREMENT_SIZE} (measure || mnonce)`);
  return { measure: Uint8Array.from(bytes.subarray(0, 32)), mnonce: Uint8Array.from(bytes.subarray(32)) };
}

export function computeMeasure(tik: Uint8Array, fw: FirmwareBuild, policy: number, launchDigest: Uint8Array, mnonce: Uint8Array): Buffer {
  if (launchDigest.length !== 32) throw new RangeError(`launch digest is ${launchDigest.length} bytes, expected 32`);
  if (mnonce.length !== 16) throw new RangeError(`mnonce is ${mnonce.length} bytes, expected 16`);
  return hmacSha256(tik, Buffer.of(0x04, fw.apiMajor & 0xff, fw.apiMinor & 0xff, fw.build & 0xff), policyBytes(policy), launchDigest, mnonce);
}

/** True when `m` is what a firmware of build `fw` reports for this launch digest, policy and TIK. */
export function verifyMeasurement(m: Measurement, tik: Uint8Array, fw: FirmwareBuild, policy: number, launchDigest: Uint8Array): boolean {
  return timingSafeEqual(computeMeasure(tik, fw, policy, launchDigest, m.mnonce), m.measure);
}
