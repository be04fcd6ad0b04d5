// AMD's CA certificates, the ARK (root, self-signed) and the ASK (signed by the ARK, signs the CEK), in
// AMD's own format (AMD SEV API, "RSA Public Key Certificate Format"):
//
//   0x00 version (1)   0x04 key_id[16]   0x14 certifying_id[16]   0x24 usage   0x28 reserved[16]
//   0x38 pubexp_size (bits)   0x3c modulus_size (bits)   0x40 pubexp[pubexp_size/8]   modulus[modulus_size/8]
//   signature[modulus_size/8]
// The signature (RSASSA-PSS, SHA-256 for 2048-bit keys, SHA-384 for 4096-bit keys) covers everything before it;
// the signed certificate's certifying_id names the signer's key_id.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { Usage, usageName, signBody, type CertificateKey, type FoundSignature, type Hash } from './certificate-key.js';
import { fromLittleEndian, intoLittleEndian } from './little-endian.js';
import { errorMessage } from '../sys/error-message.js';

const PREAMBLE = 0x40;

export class CaCertificateError extends Error {
  override readonly name = 'CaCertificateError';
}

export class CaCertificate {
  private readonly view: DataView;

  private constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Size of the certificate starting at `bytes[0]` as its header declares it (to split ASK || ARK files). */
  static declaredSize(bytes: Uint8Array, what = 'CA certificate'): number {
    if (bytes.length < PREAMBLE) throw new CaCertificateError(`${what}: ${bytes.length} bytes, shorter than the ${PREAMBLE}-byte header`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, PREAMBLE);
    const pubexpBits = view.getUint32(0x38, true);
    const modulusBits = view.getUint32(0x3c, true);
    if (modulusBits !== 2048 && modulusBits !== 4096) throw new CaCertificateError(`${what}: modulus size ${modulusBits} bits, expected 2048 or 4096`);
    if (pubexpBits === 0 || pubexpBits > modulusBits || pubexpBits % 8 !== 0)
      throw new CaCertificateError(`${what}: public exponent size ${pubexpBits} bits is invalid`);
    return PREAMBLE + pubexpBits / 8 + 2 * (modulusBits / 8);
  }

  static parse(bytes: Uint8Array, what = 'CA certificate'): CaCertificate {
    const size = CaCertificate.declaredSize(bytes, what);
    if (bytes.length < size) throw new CaCertificateError(`${what}: truncated, ${bytes.length} of ${size} bytes (no signature?)`);
    if (bytes.length > size) throw new CaCertificateError(`${what}: ${bytes.length - size} bytes after the certificate`);
    const cert = new CaCertificate(Uint8Array.from(bytes));
    if (cert.version !== 1) throw new CaCertificateError(`${what}: unsupported version ${cert.version}`);
    if (cert.usage !== Usage.ARK && cert.usage !== Usage.ASK) throw new CaCertificateError(`${what}: usage ${usageName(cert.usage)} is not ARK or ASK`);
    try {
      cert.publicKey();
    } catch (e) {
      throw new CaCertificateError(`${what}: invalid RSA public key (${errorMessage(e)})`);
    }
    return cert;
  }

  /** A new CA certificate for an RSA key, signed by `signer` (itself for an ARK). */
  static create(options: { usage: number; keyId: Uint8Array; publicKey: KeyObject; signer: { keyId: Uint8Array; privateKey: KeyObject } }): CaCertificate {
    const jwk = options.publicKey.export({ format: 'jwk' });
    if (jwk.kty !== 'RSA' || !jwk.n || !jwk.e) throw new CaCertificateError('CA certificates carry RSA keys');
    const modulus = Buffer.from(jwk.n, 'base64url');
    const bits = modulus.length * 8;
    if (bits !== 2048 && bits !== 4096) throw new CaCertificateError(`CA keys are 2048 or 4096 bits, not ${bits}`);
    const width = bits / 8;
    const bytes = new Uint8Array(PREAMBLE + 3 * width);
    const cert = new CaCertificate(bytes);
    cert.view.setUint32(0x00, 1, true);
    bytes.set(options.keyId.subarray(0, 16), 0x04);
    bytes.set(options.signer.keyId.subarray(0, 16), 0x14);
    cert.view.setUint32(0x24, options.usage, true);
    cert.view.setUint32(0x38, bits, true);
    cert.view.setUint32(0x3c, bits, true);
    intoLittleEndian(Buffer.from(jwk.e, 'base64url'), bytes.subarray(PREAMBLE, PREAMBLE + width), 'public exponent');
    intoLittleEndian(modulus, bytes.subarray(PREAMBLE + width, PREAMBLE + 2 * width), 'modulus');
    const signature = signBody(options.signer.privateKey, 'rsa', cert.hash, cert.body());
    intoLittleEndian(signature, bytes.subarray(PREAMBLE + 2 * width), 'signature');
    return cert;
  }

  get version(): number {
    return this.view.getUint32(0x00, true);
  }
  get keyId(): Uint8Array {
    return this.bytes.subarray(0x04, 0x14);
  }
  get certifyingId(): Uint8Array {
    return this.bytes.subarray(0x14, 0x24);
  }
  get usage(): number {
    return this.view.getUint32(0x24, true);
  }
  get pubexpBits(): number {
    return this.view.getUint32(0x38, true);
  }
  get modulusBits(): number {
    return this.view.getUint32(0x3c, true);
  }
  /** AMD pairs the hash with the key size. */
  get hash(): Hash {
    return this.modulusBits === 2048 ? 'sha256' : 'sha384';
  }

  private get modulusOffset(): number {
    return PREAMBLE + this.pubexpBits / 8;
  }
  private get signatureOffset(): number {
    return this.modulusOffset + this.modulusBits / 8;
  }

  /** The signed part: header, exponent and modulus. */
  body(): Uint8Array {
    return this.bytes.subarray(0, this.signatureOffset);
  }

  publicKey(): KeyObject {
    const e = fromLittleEndian(this.bytes.subarray(PREAMBLE, this.modulusOffset), this.pubexpBits / 8, 'public exponent');
    const n = fromLittleEndian(this.bytes.subarray(this.modulusOffset, this.signatureOffset), this.modulusBits / 8, 'modulus');
    return createPublicKey({ key: { kty: 'RSA', n: strip(n).toString('base64url'), e: strip(e).toString('base64url') }, format: 'jwk' });
  }

  signingKey(): CertificateKey {
    return { usage: this.usage, kind: 'rsa', hash: this.hash, publicKey: this.publicKey() };
  }

  /** The signature over the body; a CA certificate is always signed by the ARK's usage. */
  signature(): FoundSignature {
    return { usage: Usage.ARK, kind: 'rsa', hash: this.hash, field: this.bytes.subarray(this.signatureOffset) };
  }
}

// JWK integers carry no leading zero bytes.
function strip(bigEndian: Buffer): Buffer {
  let i = 0;
  while (i < bigEndian.length - 1 && bigEndian[i] === 0) i++;
  return bigEndian.subarray(i);
}
