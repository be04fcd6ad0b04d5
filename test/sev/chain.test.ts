import { expect } from 'chai';
import { CaCertificate } from '../../src/sev/ca-certificate.js';
import { Usage } from '../../src/sev/certificate-key.js';
import {
  ChainError,
  caChainLinks,
  encodeCaChain,
  encodeSevChain,
  parseCaChain,
  parseFullChain,
  parseSevChain,
  sevChainLinks,
  verifyChain,
  type FullChain,
} from '../../src/sev/chain.js';
import { SEV_CERT_SIZE, SevCertificate } from '../../src/sev/sev-certificate.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { itWithVectors, vector } from './vectors.js';

function realChain(generation: 'naples' | 'rome'): FullChain {
  const sev = parseSevChain(Buffer.concat(['pdh', 'pek', 'oca', 'cek'].map((n) => vector(`virtee-sev/tests/${generation}/${n}.cert`))));
  const ca = parseCaChain(Buffer.concat(['ask', 'ark'].map((n) => vector(`virtee-sev/src/certs/sev/builtin/${generation}/${n}.cert`))));
  return { ...sev, ...ca };
}

/** The same certificate with one bit of its signature flipped. */
function withBrokenSignature<T extends SevCertificate | CaCertificate>(cert: T, parse: (b: Uint8Array) => T, signatureOffset: number): T {
  const bytes = Uint8Array.from(cert.bytes);
  bytes[signatureOffset]! ^= 0x01;
  return parse(bytes);
}

describe('sev: certificate chains', () => {
  itWithVectors('verifies the real Naples and Rome chains link by link', () => {
    for (const gen of ['naples', 'rome'] as const) {
      const chain = realChain(gen);
      expect(
        [...caChainLinks(chain, chain.cek), ...sevChainLinks(chain)].every((l) => l.ok),
        gen,
      ).to.equal(true);
      expect(verifyChain(chain)).to.equal(chain.pdh);
    }
  });

  itWithVectors('refuses a Naples CEK under the Rome ASK', () => {
    const naples = realChain('naples');
    const rome = realChain('rome');
    expect(() => verifyChain({ ...naples, ask: rome.ask, ark: rome.ark })).to.throw(ChainError, 'ASK -> CEK');
  });

  itWithVectors('rebuilds the malformed Naples ARK from its detached signature', () => {
    const bad = vector('virtee-sev/tests/naples/ark.cert.bad');
    expect(() => CaCertificate.parse(bad, 'ARK')).to.throw('truncated');
    const fixed = CaCertificate.parse(Buffer.concat([bad, vector('virtee-sev/tests/naples/ark.cert.sig')]), 'ARK');
    expect(caChainLinks({ ark: fixed, ask: realChain('naples').ask }, realChain('naples').cek)[0]!.ok).to.equal(true);
  });

  itWithVectors('round-trips the real certificates byte for byte', () => {
    const chain = realChain('rome');
    const sev = encodeSevChain(chain);
    const ca = encodeCaChain(chain);
    expect(Buffer.from(encodeSevChain(parseSevChain(sev)))).to.deep.equal(Buffer.from(sev));
    expect(Buffer.from(encodeCaChain(parseFullChain(Buffer.concat([sev, ca]))))).to.deep.equal(Buffer.from(ca));
  });

  describe('self-made chains', () => {
    let identity: SimulatedIdentity;
    before(() => {
      identity = SimulatedIdentity.generate({ caBits: 2048 });
    });

    it('verifies a freshly generated chain (RSA-2048/SHA-256 CA)', () => {
      expect(verifyChain(identity.chain)).to.equal(identity.chain.pdh);
      expect(identity.chain.pdh.usage).to.equal(Usage.PDH);
    });

    it('verifies a chain with a 4096-bit CA (SHA-384), as Rome and later', () => {
      const big = SimulatedIdentity.generate({ caBits: 4096 });
      expect(big.chain.ark.bytes.length).to.equal(1600);
      expect(big.chain.ark.hash).to.equal('sha384');
      expect(verifyChain(big.chain)).to.equal(big.chain.pdh);
    });

    it('names the link when one signature is wrong', () => {
      const c = identity.chain;
      const sevSig = 0x414 + 8;
      const cases: [string, Partial<FullChain>][] = [
        ['ARK -> ARK', { ark: withBrokenSignature(c.ark, (b) => CaCertificate.parse(b), c.ark.body().length + 3) }],
        ['ARK -> ASK', { ask: withBrokenSignature(c.ask, (b) => CaCertificate.parse(b), c.ask.body().length + 3) }],
        ['ASK -> CEK', { cek: withBrokenSignature(c.cek, (b) => SevCertificate.parse(b), sevSig + 7) }],
        ['OCA -> OCA', { oca: withBrokenSignature(c.oca, (b) => SevCertificate.parse(b), sevSig) }],
        ['OCA -> PEK', { pek: withBrokenSignature(c.pek, (b) => SevCertificate.parse(b), sevSig) }],
        ['CEK -> PEK', { pek: withBrokenSignature(c.pek, (b) => SevCertificate.parse(b), 0x61c + 8) }],
        ['PEK -> PDH', { pdh: withBrokenSignature(c.pdh, (b) => SevCertificate.parse(b), sevSig + 80) }],
      ];
      for (const [link, change] of cases) {
        expect(() => verifyChain({ ...c, ...change }), link).to.throw(ChainError, link);
      }
    });

    it('refuses a PDH from another platform and a body altered after signing', () => {
      const other = SimulatedIdentity.generate({ caBits: 2048 });
      expect(() => verifyChain({ ...identity.chain, pdh: other.chain.pdh })).to.throw(ChainError, 'PEK -> PDH');
      const bytes = Uint8Array.from(identity.chain.pek.bytes);
      bytes[0x05]! ^= 1;
      expect(() => verifyChain({ ...identity.chain, pek: SevCertificate.parse(bytes) })).to.throw(ChainError, 'OCA -> PEK');
    });

    it('refuses a signature made for another usage even by the right key', () => {
      const c = identity.chain;
      const pdh = SevCertificate.create({ usage: Usage.PDH, publicKey: c.pdh.publicKey() });
      pdh.sign({ usage: Usage.OCA, kind: 'ecdsa', hash: 'sha256', privateKey: identity.keys.pek });
      expect(() => verifyChain({ ...c, pdh })).to.throw(ChainError, 'PEK -> PDH');
    });

    it('rejects malformed certificates with a clear message', () => {
      expect(() => SevCertificate.parse(new Uint8Array(100), 'PDH')).to.throw(`PDH: 100 bytes, a SEV certificate has ${SEV_CERT_SIZE}`);
      const bytes = Uint8Array.from(identity.chain.pdh.bytes);
      bytes[0] = 2;
      expect(() => SevCertificate.parse(bytes, 'PDH')).to.throw('unsupported certificate version 2');
      const offCurve = Uint8Array.from(identity.chain.pdh.bytes);
      offCurve[0x14]! ^= 1;
      expect(() => SevCertificate.parse(offCurve, 'PDH')).to.throw('not a valid P-384 point');
      const { pek, pdh, oca, cek } = identity.chain;
      expect(() => parseSevChain(Buffer.concat([pek.bytes, pdh.bytes, oca.bytes, cek.bytes]))).to.throw('PDH: certificate has usage PEK');
    });
  });
});
