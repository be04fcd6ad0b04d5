// Key usages, algorithms and the signature primitives shared by both AMD certificate formats (the SEV
// platform certificates and the ARK/ASK CA certificates). Constants from the AMD SEV API, "Certificates".
import { constants, sign, verify, type KeyObject } from 'node:crypto';
import { fromLittleEndian } from './little-endian.js';

export const Usage = {
  ARK: 0x0000,
  ASK: 0x0013,
  INVALID: 0x1000,
  OCA: 0x1001,
  PEK: 0x1002,
  PDH: 0x1003,
  CEK: 0x1004,
} as const;

export type UsageName = keyof typeof Usage;

export function usageName(usage: number): string {
  const entry = Object.entries(Usage).find(([, v]) => v === usage);
  return entry ? entry[0] : `usage 0x${usage.toString(16)}`;
}

export const Algorithm = {
  NONE: 0x0000,
  RSA_SHA256: 0x0001,
  ECDSA_SHA256: 0x0002,
  ECDH_SHA256: 0x0003,
  RSA_SHA384: 0x0101,
  ECDSA_SHA384: 0x0102,
  ECDH_SHA384: 0x0103,
} as const;

export type Hash = 'sha256' | 'sha384';
export type KeyKind = 'rsa' | 'ecdsa' | 'ecdh';

/** What an algorithm number means, or undefined for NONE and unknown values. */
export function describeAlgorithm(algorithm: number): { kind: KeyKind; hash: Hash } | undefined {
  switch (algorithm) {
    case Algorithm.RSA_SHA256:
      return { kind: 'rsa', hash: 'sha256' };
    case Algorithm.RSA_SHA384:
      return { kind: 'rsa', hash: 'sha384' };
    case Algorithm.ECDSA_SHA256:
      return { kind: 'ecdsa', hash: 'sha256' };
    case Algorithm.ECDSA_SHA384:
      return { kind: 'ecdsa', hash: 'sha384' };
    case Algorithm.ECDH_SHA256:
      return { kind: 'ecdh', hash: 'sha256' };
    case Algorithm.ECDH_SHA384:
      return { kind: 'ecdh', hash: 'sha384' };
    default:
      return undefined;
  }
}

export function algorithmFor(kind: KeyKind, hash: Hash): number {
  const table: Record<KeyKind, Record<Hash, number>> = {
    rsa: { sha256: Algorithm.RSA_SHA256, sha384: Algorithm.RSA_SHA384 },
    ecdsa: { sha256: Algorithm.ECDSA_SHA256, sha384: Algorithm.ECDSA_SHA384 },
    ecdh: { sha256: Algorithm.ECDH_SHA256, sha384: Algorithm.ECDH_SHA384 },
  };
  return table[kind][hash];
}

/** A certificate's public key as a signer: which usage it signs as, how, and with which key. */
export interface CertificateKey {
  readonly usage: number;
  readonly kind: KeyKind;
  readonly hash: Hash;
  readonly publicKey: KeyObject;
}

/** A signature as stored in a certificate. */
export interface FoundSignature {
  readonly usage: number;
  readonly kind: KeyKind;
  readonly hash: Hash;
  /** The little-endian field: an RSA signature integer, or ECDSA r[72] || s[72]. */
  readonly field: Uint8Array;
}

/** Size in bytes of the EC coordinates in certificate ECDSA signatures (r and s fields are 72 bytes). */
export const EC_SIGNATURE_FIELD = 72;

const curveBytes: Record<string, number> = { prime256v1: 32, secp384r1: 48 };

/** node:crypto's encoding of a stored signature for this signer's key size, or undefined if it cannot fit. */
function bigEndianFor(signer: CertificateKey, field: Uint8Array): Buffer | undefined {
  const details = signer.publicKey.asymmetricKeyDetails;
  try {
    if (signer.kind === 'rsa') return fromLittleEndian(field, (details?.modulusLength ?? 0) / 8, 'RSA signature');
    const bytes = curveBytes[details?.namedCurve ?? ''];
    if (!bytes) return undefined;
    return Buffer.concat([
      fromLittleEndian(field.subarray(0, EC_SIGNATURE_FIELD), bytes, 'r'),
      fromLittleEndian(field.subarray(EC_SIGNATURE_FIELD, 2 * EC_SIGNATURE_FIELD), bytes, 's'),
    ]);
  } catch {
    return undefined;
  }
}

// AMD signs with RSASSA-PSS, MGF1 with the same hash, salt length = hash length (as virtee/sev verifies).
const pss = { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST };

/** True when `signature` is `signer`'s valid signature over `body` made for the signer's usage and algorithm. */
export function verifiesWith(signer: CertificateKey, body: Uint8Array, signature: FoundSignature): boolean {
  if (signature.usage !== signer.usage || signature.kind !== signer.kind || signature.hash !== signer.hash) return false;
  const bigEndian = bigEndianFor(signer, signature.field);
  if (!bigEndian) return false;
  if (signer.kind === 'rsa') return verify(signer.hash, body, { key: signer.publicKey, ...pss }, bigEndian);
  if (signer.kind === 'ecdsa') return verify(signer.hash, body, { key: signer.publicKey, dsaEncoding: 'ieee-p1363' }, bigEndian);
  return false;
}

/** Signs `body` as `kind`/`hash` with `privateKey`; returns the big-endian encoding `FoundSignature` uses. */
export function signBody(privateKey: KeyObject, kind: 'rsa' | 'ecdsa', hash: Hash, body: Uint8Array): Buffer {
  if (kind === 'rsa') return sign(hash, body, { key: privateKey, ...pss });
  return sign(hash, body, { key: privateKey, dsaEncoding: 'ieee-p1363' });
}
