// Certificates, sessions, measurements and secret tables arrive from the other party: arbitrary bytes must
// be either accepted or refused with the parser's own error, never crash it or be half-accepted.
import { expect } from 'chai';
import fc from 'fast-check';
import { CaCertificate, CaCertificateError } from '../../src/sev/ca-certificate.js';
import { ChainError, parseCaChain } from '../../src/sev/chain.js';
import { buildGuidTable, parseGuidTable } from '../../src/sev/guid-table.js';
import { guidBytes, guidText } from '../../src/sev/guid.js';
import { SEV_CERT_SIZE, SevCertificate, SevCertificateError } from '../../src/sev/sev-certificate.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { POLICY_RESERVED_MASK, decodePolicy, describePolicy, encodePolicy } from '../../src/sev/policy.js';

function refusedWith(fn: () => unknown, ...errors: (new (...a: never[]) => Error)[]): void {
  try {
    fn();
  } catch (e) {
    expect(
      errors.some((E) => e instanceof E),
      String(e),
    ).to.equal(true);
  }
}

describe('sev: parsers under arbitrary input', () => {
  it('GUIDs round-trip in EFI byte order', () => {
    expect(guidBytes('736869e5-84f0-4973-92ec-06879ce3da0b').toString('hex')).to.equal('e5696873f084734992ec06879ce3da0b');
    fc.assert(
      fc.property(fc.uuid(), (u) => {
        expect(guidText(guidBytes(u))).to.equal(u.toLowerCase());
      }),
    );
    expect(() => guidBytes('not-a-guid')).to.throw('is not a GUID');
    // sevctl's UUID parser also takes 32 hex digits, braces and the URN form.
    for (const spelling of ['736869e584f0497392ec06879ce3da0b', '{736869e5-84f0-4973-92ec-06879ce3da0b}', 'urn:uuid:736869E5-84F0-4973-92EC-06879CE3DA0B']) {
      expect(guidBytes(spelling).toString('hex'), spelling).to.equal('e5696873f084734992ec06879ce3da0b');
    }
    for (const wrong of ['{736869e5-84f0-4973-92ec-06879ce3da0b', '736869e584f0497392ec06879ce3da0', '736869e5-84f0-4973-92ec06879ce3da0b']) {
      expect(() => guidBytes(wrong), wrong).to.throw('is not a GUID');
    }
  });

  it('policies decode and encode back; reserved bits are refused', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff_ffff }), (value) => {
        if (value & POLICY_RESERVED_MASK) expect(() => decodePolicy(value)).to.throw(RangeError, 'reserved bits');
        else expect(encodePolicy(decodePolicy(value))).to.equal(value);
      }),
    );
    expect(describePolicy(0x0001_0005)).to.equal('NODBG|ES, min API 1.0');
  });

  it('GUID tables round-trip and malformed ones are refused with RangeError', () => {
    const entry = fc.record({ guid: fc.uuid().map((u) => u.toLowerCase()), data: fc.uint8Array({ maxLength: 64 }) });
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 5 }), fc.constantFrom(2 as const, 4 as const), (entries, width) => {
        const table = buildGuidTable('1e74f542-71dd-4d66-963e-ef4287ff173b', entries, width);
        expect(table.length % 16).to.equal(0);
        expect(parseGuidTable(table, width).entries).to.deep.equal(entries);
      }),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.constantFrom(2 as const, 4 as const), (bytes, width) => {
        refusedWith(() => parseGuidTable(bytes, width), RangeError);
      }),
    );
  });

  it('certificates: random bytes and single-byte corruptions are accepted or refused, never crash', () => {
    const identity = SimulatedIdentity.generate({ caBits: 2048 });
    fc.assert(
      fc.property(fc.uint8Array({ minLength: SEV_CERT_SIZE, maxLength: SEV_CERT_SIZE }), (bytes) => {
        refusedWith(() => SevCertificate.parse(bytes), SevCertificateError);
      }),
      { numRuns: 200 },
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: SEV_CERT_SIZE - 1 }), fc.integer({ min: 1, max: 255 }), (at, x) => {
        const bytes = Uint8Array.from(identity.chain.pek.bytes);
        bytes[at]! ^= x;
        refusedWith(() => SevCertificate.parse(bytes).signatures(), SevCertificateError);
      }),
      { numRuns: 300 },
    );
    const ca = Buffer.concat([identity.chain.ask.bytes, identity.chain.ark.bytes]);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0x40 * 2 - 1 }), fc.integer({ min: 1, max: 255 }), fc.integer({ min: 0, max: ca.length }), (at, x, cut) => {
        const bytes = Buffer.from(ca.subarray(0, cut));
        if (at < bytes.length) bytes[at]! ^= x;
        refusedWith(() => parseCaChain(bytes), CaCertificateError, ChainError);
      }),
      { numRuns: 300 },
    );
    refusedWith(() => CaCertificate.parse(new Uint8Array(10)), CaCertificateError);
  });
});
