// The SEV guest policy (AMD SEV API, "Guest Policy"): a 32-bit word fixed at LAUNCH_START, bound to the
// session by policy_mac and into the launch measurement.
//   bit 0 NODBG   bit 1 NOKS   bit 2 ES   bit 3 NOSEND   bit 4 DOMAIN   bit 5 SEV   bits 6-15 reserved (0)
//   bits 16-23 minimum firmware API major, bits 24-31 minimum API minor
export const PolicyBit = {
  NODBG: 1 << 0,
  NOKS: 1 << 1,
  ES: 1 << 2,
  NOSEND: 1 << 3,
  DOMAIN: 1 << 4,
  SEV: 1 << 5,
} as const;

export const POLICY_RESERVED_MASK = 0x0000_ffc0;

export interface Policy {
  noDebug: boolean;
  noKeySharing: boolean;
  encryptedState: boolean;
  noSend: boolean;
  domain: boolean;
  sev: boolean;
  minApiMajor: number;
  minApiMinor: number;
}

export function decodePolicy(value: number): Policy {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) throw new RangeError(`policy ${value} is not a 32-bit value`);
  if (value & POLICY_RESERVED_MASK) throw new RangeError(`policy 0x${value.toString(16)} sets reserved bits 6-15`);
  return {
    noDebug: (value & PolicyBit.NODBG) !== 0,
    noKeySharing: (value & PolicyBit.NOKS) !== 0,
    encryptedState: (value & PolicyBit.ES) !== 0,
    noSend: (value & PolicyBit.NOSEND) !== 0,
    domain: (value & PolicyBit.DOMAIN) !== 0,
    sev: (value & PolicyBit.SEV) !== 0,
    minApiMajor: (value >>> 16) & 0xff,
    minApiMinor: (value >>> 24) & 0xff,
  };
}

export function encodePolicy(p: Policy): number {
  return (
    ((p.noDebug ? PolicyBit.NODBG : 0) |
      (p.noKeySharing ? PolicyBit.NOKS : 0) |
      (p.encryptedState ? PolicyBit.ES : 0) |
      (p.noSend ? PolicyBit.NOSEND : 0) |
      (p.domain ? PolicyBit.DOMAIN : 0) |
      (p.sev ? PolicyBit.SEV : 0) |
      ((p.minApiMajor & 0xff) << 16) |
      ((p.minApiMinor & 0xff) << 24)) >>>
    0
  );
}

/** The policy as the 4 little-endian bytes that get MACed and measured. */
export function policyBytes(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  return b;
}

/** `NODBG|NOKS, min API 0.0` */
export function describePolicy(value: number): string {
  const p = decodePolicy(value);
  const flags = (Object.keys(PolicyBit) as (keyof typeof PolicyBit)[]).filter((k) => value & PolicyBit[k]);
  return `${flags.length ? flags.join('|') : 'no flags'}, min API ${p.minApiMajor}.${p.minApiMinor}`;
}
