// The key broker's trust anchors: the ARKs whose platforms it will give a session. A platform's chain is
// accepted only when its ARK is, byte for byte, one the operator configured and every link down to the PDH
// verifies. An anchor is AMD's ARK (a certificate file: the ARK alone, or AMD's ask_ark_<gen>.cert) or, for
// development, a sev-sim state directory, whose ARK is the simulator's own: everything it vouches for is
// called simulated, since sev-sim does not encrypt guest memory.
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { CaCertificate } from '../sev/ca-certificate.js';
import { Usage, verifiesWith } from '../sev/certificate-key.js';
import { parseCaChain, verifyChain, type FullChain } from '../sev/chain.js';
import type { SevCertificate } from '../sev/sev-certificate.js';
import { errorMessage } from '../sys/error-message.js';

export interface TrustAnchor {
  /** Where the operator gave it (the file or directory). */
  readonly source: string;
  readonly ark: CaCertificate;
  readonly simulated: boolean;
}

export class TrustError extends Error {
  override readonly name = 'TrustError';
}

/** Reads one --trust-ark argument; the ARK must be self-signed. */
export function loadTrustAnchor(source: string): TrustAnchor {
  let simulated = false;
  let file = source;
  try {
    if (statSync(source).isDirectory()) {
      file = path.join(source, 'ark.cert');
      simulated = true;
    }
    const bytes = readFileSync(file);
    const size = CaCertificate.declaredSize(bytes, file);
    const ark = size === bytes.length ? CaCertificate.parse(bytes, file) : parseCaChain(bytes).ark;
    if (ark.usage !== Usage.ARK) throw new TrustError(`${file}: not an ARK`);
    const selfSigned = Buffer.from(ark.keyId).equals(ark.certifyingId) && verifiesWith(ark.signingKey(), ark.body(), ark.signature());
    if (!selfSigned) throw new TrustError(`${file}: the ARK's self-signature does not verify`);
    return { source, ark, simulated };
  } catch (e) {
    if (e instanceof TrustError) throw e;
    throw new TrustError(`trust anchor ${source}: ${errorMessage(e)}`);
  }
}

export type ChainVerdict = { ok: true; pdh: SevCertificate; anchor: TrustAnchor } | { ok: false; reason: 'chain-untrusted' | 'chain-invalid'; detail: string };

const VERIFIED_CACHE_LIMIT = 1024;

/** The configured anchors, and the chains already verified against them (a chain never changes its verdict). */
export class TrustStore {
  private readonly verified = new Map<string, { pdh: SevCertificate; anchor: TrustAnchor }>();

  constructor(readonly anchors: readonly TrustAnchor[]) {
    if (anchors.length === 0) throw new TrustError('no trust anchor configured');
  }

  get simulatedOnly(): boolean {
    return this.anchors.every((a) => a.simulated);
  }

  /**
   * Verifies a chain (PDH || PEK || OCA || CEK || ASK || ARK as received) up to a trust anchor; `parse` reads
   * its certificates, which is skipped (with the verification) for a chain already verified.
   */
  verify(chainBytes: Uint8Array, parse: () => FullChain): ChainVerdict {
    const key = createHash('sha256').update(chainBytes).digest('hex');
    const known = this.verified.get(key);
    if (known) return { ok: true, ...known };
    const chain = parse();
    const anchor = this.anchors.find((a) => Buffer.from(a.ark.bytes).equals(chain.ark.bytes));
    if (!anchor) return { ok: false, reason: 'chain-untrusted', detail: "the chain's ARK is not a configured trust anchor" };
    try {
      const pdh = verifyChain(chain);
      if (this.verified.size >= VERIFIED_CACHE_LIMIT) this.verified.delete(this.verified.keys().next().value!);
      this.verified.set(key, { pdh, anchor });
      return { ok: true, pdh, anchor };
    } catch (e) {
      return { ok: false, reason: 'chain-invalid', detail: errorMessage(e) };
    }
  }
}
