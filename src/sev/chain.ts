// The SEV certificate chain and its verification, link by link, as the guest owner checks a platform
// before trusting its PDH:  ARK -> ARK,  ARK -> ASK,  ASK -> CEK,  OCA -> OCA,  OCA -> PEK,  CEK -> PEK,  PEK -> PDH.
//
// Files: a platform's SEV chain is PDH || PEK || OCA || CEK (as `sevctl export` writes it); AMD's CA chain is
// ASK || ARK (as AMD publishes ask_ark_<generation>.cert); a full chain is the SEV chain followed by the CA chain.
import { timingSafeEqual } from 'node:crypto';
import { CaCertificate } from './ca-certificate.js';
import { Usage, usageName, verifiesWith, type CertificateKey } from './certificate-key.js';
import { SEV_CERT_SIZE, SevCertificate } from './sev-certificate.js';

export interface SevChain {
  readonly pdh: SevCertificate;
  readonly pek: SevCertificate;
  readonly oca: SevCertificate;
  readonly cek: SevCertificate;
}

export interface CaChain {
  readonly ask: CaCertificate;
  readonly ark: CaCertificate;
}

export type FullChain = SevChain & CaChain;

export class ChainError extends Error {
  override readonly name = 'ChainError';
  constructor(
    readonly link: string,
    message: string,
  ) {
    super(`${link}: ${message}`);
  }
}

/** One verified link, for reporting (`sev verify` prints them). */
export interface LinkResult {
  readonly link: string;
  readonly ok: boolean;
}

function expectUsage(cert: { usage: number }, usage: number, what: string): void {
  if (cert.usage !== usage) throw new ChainError(what, `certificate has usage ${usageName(cert.usage)}, expected ${usageName(usage)}`);
}

export function parseSevChain(bytes: Uint8Array): SevChain {
  if (bytes.length !== 4 * SEV_CERT_SIZE) {
    throw new ChainError('SEV chain', `${bytes.length} bytes, expected PDH, PEK, OCA and CEK (${4 * SEV_CERT_SIZE} bytes)`);
  }
  const names = ['PDH', 'PEK', 'OCA', 'CEK'] as const;
  const [pdh, pek, oca, cek] = names.map((name, i) => {
    const cert = SevCertificate.parse(bytes.subarray(i * SEV_CERT_SIZE, (i + 1) * SEV_CERT_SIZE), name);
    expectUsage(cert, Usage[name], name);
    return cert;
  }) as [SevCertificate, SevCertificate, SevCertificate, SevCertificate];
  return { pdh, pek, oca, cek };
}

export function parseCaChain(bytes: Uint8Array): CaChain {
  const askSize = CaCertificate.declaredSize(bytes, 'ASK');
  const ask = CaCertificate.parse(bytes.subarray(0, askSize), 'ASK');
  const ark = CaCertificate.parse(bytes.subarray(askSize), 'ARK');
  expectUsage(ask, Usage.ASK, 'ASK');
  expectUsage(ark, Usage.ARK, 'ARK');
  return { ask, ark };
}

/** A full chain file (SEV chain then CA chain). */
export function parseFullChain(bytes: Uint8Array): FullChain {
  const sevBytes = 4 * SEV_CERT_SIZE;
  if (bytes.length <= sevBytes) throw new ChainError('full chain', `${bytes.length} bytes: no ASK/ARK after the SEV chain`);
  return { ...parseSevChain(bytes.subarray(0, sevBytes)), ...parseCaChain(bytes.subarray(sevBytes)) };
}

export function encodeSevChain(chain: SevChain): Uint8Array {
  return Buffer.concat([chain.pdh.bytes, chain.pek.bytes, chain.oca.bytes, chain.cek.bytes]);
}

export function encodeCaChain(chain: CaChain): Uint8Array {
  return Buffer.concat([chain.ask.bytes, chain.ark.bytes]);
}

function sevLink(signer: CertificateKey, signed: SevCertificate): boolean {
  return signed.signatures().some((sig) => verifiesWith(signer, signed.body(), sig));
}

function caLink(signer: CaCertificate, signed: CaCertificate): boolean {
  const ids = signer.keyId.length === signed.certifyingId.length && timingSafeEqual(signer.keyId, signed.certifyingId);
  return ids && verifiesWith(signer.signingKey(), signed.body(), signed.signature());
}

/** Checks every link of the SEV part (OCA self-signed, OCA and CEK sign the PEK, the PEK signs the PDH). */
export function sevChainLinks(chain: SevChain): LinkResult[] {
  return [
    { link: 'OCA -> OCA', ok: sevLink(chain.oca.signingKey(), chain.oca) },
    { link: 'OCA -> PEK', ok: sevLink(chain.oca.signingKey(), chain.pek) },
    { link: 'CEK -> PEK', ok: sevLink(chain.cek.signingKey(), chain.pek) },
    { link: 'PEK -> PDH', ok: sevLink(chain.pek.signingKey(), chain.pdh) },
  ];
}

/** Checks the AMD part (ARK self-signed, ARK signs the ASK) and that the ASK signed this CEK. */
export function caChainLinks(ca: CaChain, cek: SevCertificate): LinkResult[] {
  return [
    { link: 'ARK -> ARK', ok: caLink(ca.ark, ca.ark) },
    { link: 'ARK -> ASK', ok: caLink(ca.ark, ca.ask) },
    { link: 'ASK -> CEK', ok: sevLink(ca.ask.signingKey(), cek) },
  ];
}

/** Verifies the whole chain; returns the PDH it vouches for, or throws naming the first broken link. */
export function verifyChain(chain: FullChain): SevCertificate {
  for (const { link, ok } of [...caChainLinks(chain, chain.cek), ...sevChainLinks(chain)]) {
    if (!ok) throw new ChainError(link, 'signature does not verify');
  }
  return chain.pdh;
}
