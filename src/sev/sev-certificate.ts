// The SEV platform certificate (AMD SEV API, "SEV Certificate Format"): 0x824 bytes holding the OCA, PEK,
// PDH, CEK and the guest owner's DH certificate. Little-endian fields, EC coordinates in 72-byte fields.
//
//   0x000 version (1)        0x004 api_major, api_minor   0x006 reserved
//   0x008 pubkey usage       0x00c pubkey algorithm       0x010 pubkey (1028 bytes: curve, qx[72], qy[72], 0...)
//   0x414 sig1 usage, algo, sig1[512]                     0x61c sig2 usage, algo, sig2[512]
// Signatures cover the body, bytes 0x000..0x413. ECDSA signatures are r[72] || s[72], little-endian.
import { createPublicKey, type KeyObject } from 'node:crypto';
import {
  Usage,
  describeAlgorithm,
  usageName,
  algorithmFor,
  signBody,
  EC_SIGNATURE_FIELD,
  type CertificateKey,
  type FoundSignature,
  type Hash,
} from './certificate-key.js';
import { fromLittleEndian, intoLittleEndian } from './little-endian.js';
import { errorMessage } from '../sys/error-message.js';

export const SEV_CERT_SIZE = 0x824;
export const SEV_CERT_BODY_SIZE = 0x414;

const KEY_OFFSET = 0x10;
const EC_FIELD = EC_SIGNATURE_FIELD;
const SIG_SLOTS = [0x414, 0x61c] as const;
const SIG_FIELD = 512;

/** EC curve identifiers used in AMD certificates. */
export const Curve = { P256: 1, P384: 2 } as const;
/** Curve names as JWK spells them, and coordinate sizes. */
const curves: Record<number, { name: string; bytes: number }> = {
  [Curve.P256]: { name: 'P-256', bytes: 32 },
  [Curve.P384]: { name: 'P-384', bytes: 48 },
};

const platformUsages: readonly number[] = [Usage.OCA, Usage.PEK, Usage.PDH, Usage.CEK];
const signingUsages: readonly number[] = [Usage.OCA, Usage.PEK, Usage.PDH, Usage.CEK, Usage.ARK, Usage.ASK];

/** A private key signing certificates as `usage` with `kind`/`hash`. */
export interface CertificateSigner {
  readonly usage: number;
  readonly kind: 'rsa' | 'ecdsa';
  readonly hash: Hash;
  readonly privateKey: KeyObject;
}

export class SevCertificateError extends Error {
  override readonly name = 'SevCertificateError';
}

export class SevCertificate {
  private readonly view: DataView;

  private constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Parses and validates one certificate; `what` names it in errors (e.g. "PDH"). */
  static parse(bytes: Uint8Array, what = 'SEV certificate'): SevCertificate {
    if (bytes.length !== SEV_CERT_SIZE) {
      throw new SevCertificateError(`${what}: ${bytes.length} bytes, a SEV certificate has ${SEV_CERT_SIZE}`);
    }
    const cert = new SevCertificate(Uint8Array.from(bytes));
    if (cert.version !== 1) throw new SevCertificateError(`${what}: unsupported certificate version ${cert.version}`);
    if (!platformUsages.includes(cert.usage)) throw new SevCertificateError(`${what}: key usage ${usageName(cert.usage)} is not OCA, PEK, PDH or CEK`);
    const algo = describeAlgorithm(cert.algorithm);
    if (!algo) throw new SevCertificateError(`${what}: unknown key algorithm 0x${cert.algorithm.toString(16)}`);
    if (algo.kind === 'rsa') throw new SevCertificateError(`${what}: RSA keys in SEV platform certificates are not supported`);
    if (!curves[cert.curve]) throw new SevCertificateError(`${what}: unknown EC curve ${cert.curve}`);
    try {
      cert.publicKey();
    } catch (e) {
      throw new SevCertificateError(`${what}: public key is not a valid ${curves[cert.curve]!.name} point (${errorMessage(e)})`);
    }
    return cert;
  }

  /** An unsigned certificate for an EC public key (the guest owner's DH certificate, or a platform key before signing). */
  static create(options: { usage: number; hash?: Hash; publicKey: KeyObject; apiMajor?: number; apiMinor?: number }): SevCertificate {
    const bytes = new Uint8Array(SEV_CERT_SIZE);
    const cert = new SevCertificate(bytes);
    const jwk = options.publicKey.export({ format: 'jwk' });
    const curve = Object.entries(curves).find(([, c]) => c.name === jwk.crv);
    if (jwk.kty !== 'EC' || !curve || !jwk.x || !jwk.y) throw new SevCertificateError('SEV certificates carry P-256 or P-384 EC keys');
    const kind = options.usage === Usage.PDH ? 'ecdh' : 'ecdsa';
    cert.view.setUint32(0x00, 1, true);
    bytes[0x04] = options.apiMajor ?? 0;
    bytes[0x05] = options.apiMinor ?? 0;
    cert.view.setUint32(0x08, options.usage, true);
    cert.view.setUint32(0x0c, algorithmFor(kind, options.hash ?? 'sha256'), true);
    cert.view.setUint32(KEY_OFFSET, Number(curve[0]), true);
    intoLittleEndian(Buffer.from(jwk.x, 'base64url'), bytes.subarray(KEY_OFFSET + 4, KEY_OFFSET + 4 + EC_FIELD), 'qx');
    intoLittleEndian(Buffer.from(jwk.y, 'base64url'), bytes.subarray(KEY_OFFSET + 4 + EC_FIELD, KEY_OFFSET + 4 + 2 * EC_FIELD), 'qy');
    for (const slot of SIG_SLOTS) cert.view.setUint32(slot, Usage.INVALID, true);
    return cert;
  }

  get version(): number {
    return this.view.getUint32(0x00, true);
  }
  get apiMajor(): number {
    return this.bytes[0x04]!;
  }
  get apiMinor(): number {
    return this.bytes[0x05]!;
  }
  get usage(): number {
    return this.view.getUint32(0x08, true);
  }
  get algorithm(): number {
    return this.view.getUint32(0x0c, true);
  }
  get curve(): number {
    return this.view.getUint32(KEY_OFFSET, true);
  }

  /** The signed part of the certificate. */
  body(): Uint8Array {
    return this.bytes.subarray(0, SEV_CERT_BODY_SIZE);
  }

  publicKey(): KeyObject {
    const curve = curves[this.curve];
    if (!curve) throw new SevCertificateError(`unknown EC curve ${this.curve}`);
    const x = fromLittleEndian(this.bytes.subarray(KEY_OFFSET + 4, KEY_OFFSET + 4 + EC_FIELD), curve.bytes, 'qx');
    const y = fromLittleEndian(this.bytes.subarray(KEY_OFFSET + 4 + EC_FIELD, KEY_OFFSET + 4 + 2 * EC_FIELD), curve.bytes, 'qy');
    return createPublicKey({ key: { kty: 'EC', crv: curve.name, x: x.toString('base64url'), y: y.toString('base64url') }, format: 'jwk' });
  }

  /** This certificate's key as a signer of other certificates. */
  signingKey(): CertificateKey {
    const algo = describeAlgorithm(this.algorithm)!;
    return { usage: this.usage, kind: algo.kind, hash: algo.hash, publicKey: this.publicKey() };
  }

  /** The signatures present (an empty slot has an invalid usage or a non-signature algorithm). */
  signatures(): FoundSignature[] {
    const found: FoundSignature[] = [];
    for (const slot of SIG_SLOTS) {
      const usage = this.view.getUint32(slot, true);
      const algo = describeAlgorithm(this.view.getUint32(slot + 4, true));
      if (!signingUsages.includes(usage) || !algo || algo.kind === 'ecdh') continue;
      found.push({ usage, kind: algo.kind, hash: algo.hash, field: this.bytes.subarray(slot + 8, slot + 8 + SIG_FIELD) });
    }
    return found;
  }

  /** Adds a signature by `signer` (its usage, algorithm and private key) into the first empty slot. */
  sign(signer: CertificateSigner): void {
    const slot = SIG_SLOTS.find((s) => !signingUsages.includes(this.view.getUint32(s, true)));
    if (slot === undefined) throw new SevCertificateError(`${usageName(this.usage)} certificate already has two signatures`);
    const signature = signBody(signer.privateKey, signer.kind, signer.hash, this.body());
    const field = this.bytes.subarray(slot + 8, slot + 8 + SIG_FIELD);
    field.fill(0);
    if (signer.kind === 'rsa') {
      intoLittleEndian(signature, field, 'RSA signature');
    } else {
      const half = signature.length / 2;
      intoLittleEndian(signature.subarray(0, half), field.subarray(0, EC_FIELD), 'r');
      intoLittleEndian(signature.subarray(half), field.subarray(EC_FIELD, 2 * EC_FIELD), 's');
    }
    this.view.setUint32(slot, signer.usage, true);
    this.view.setUint32(slot + 4, algorithmFor(signer.kind, signer.hash), true);
  }
}
