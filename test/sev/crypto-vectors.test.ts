import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { kdf, hmacSha256 } from '../../src/sev/kdf.js';
import { wrapTransportKeys, unwrapTransportKeys, encodeSession, parseSession, SessionIntegrityError } from '../../src/sev/session.js';
import { computeMeasure, verifyMeasurement } from '../../src/sev/measurement.js';
import { buildSecretPacket, buildSecretTable, openSecretPacket, parseSecretHeader, parseSecretTable } from '../../src/sev/secret.js';
import { ovmfLaunchDigest } from '../../src/sev/ovmf-digest.js';
import { hex, itWithVectors, vector } from './vectors.js';

const zero16 = new Uint8Array(16);

describe('sev: conformance with virtee/sev session and measurement', () => {
  it('derives the master secret with the SP 800-108 KDF', () => {
    expect(kdf(zero16, 'sev-master-secret', zero16, 16).toString('hex')).to.equal('ab4d269fcc62bedb4511d56c386ce706');
  });

  it('wraps TEK/TIK and MACs the policy byte for byte', () => {
    const s = wrapTransportKeys(zero16, { tek: zero16, tik: zero16 }, 0, zero16, zero16);
    expect(Buffer.from(s.wrapTk).toString('hex')).to.equal('2137bc7f9bb8bd7c3e55a576a15d3454b3856b8ba27afadf46dcfee9f02c02c4');
    expect(Buffer.from(s.wrapMac).toString('hex')).to.equal('3176c0752738bd9d5e86689534020f528c088f16238826b000b327dee6aeed7d');
    expect(Buffer.from(s.policyMac).toString('hex')).to.equal('aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af');
    expect(hmacSha256(zero16, new Uint8Array(4)).toString('hex')).to.equal('aa7855e13839dd767cd5da7c1ff5036540c9264b7a803029315e55375287b4af');
  });

  it('unwraps its own session and round-trips the 128-byte blob', () => {
    const keys = { tek: hex('00112233445566778899aabbccddeeff'), tik: hex('ffeeddccbbaa99887766554433221100') };
    const z = hex('42'.repeat(48));
    const blob = parseSession(encodeSession(wrapTransportKeys(z, keys, 5, hex('01'.repeat(16)), hex('02'.repeat(16)))));
    const back = unwrapTransportKeys(z, blob, 5);
    expect(Buffer.from(back.tek)).to.deep.equal(keys.tek);
    expect(Buffer.from(back.tik)).to.deep.equal(keys.tik);
    expect(() => unwrapTransportKeys(hex('43'.repeat(48)), blob, 5)).to.throw(SessionIntegrityError, 'wrap_mac');
    expect(() => unwrapTransportKeys(z, blob, 1)).to.throw(SessionIntegrityError, 'policy_mac');
  });

  it('computes the LAUNCH_MEASURE value of API 0.18 build 15', () => {
    const digest = createHash('sha256').digest();
    const tik = hex('66320db73158a35a255d051758e95ed4');
    const mnonce = hex('4fbe0bedbad6c86ae8f68971d103e554');
    const fw = { apiMajor: 0, apiMinor: 0x12, build: 0x0f };
    expect(computeMeasure(tik, fw, 0, digest, mnonce).toString('hex')).to.equal('6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea');
    const measure = hex('6faab2daae389bcd3405a05d6cafe33c0414f7bedd0bae19ba5f38b7fd1664ea');
    expect(verifyMeasurement({ measure, mnonce }, tik, fw, 0, digest)).to.equal(true);
    expect(verifyMeasurement({ measure, mnonce }, tik, { ...fw, build: 16 }, 0, digest)).to.equal(false);
  });
});

describe('sev: conformance with sevctl measurement build', () => {
  const fw = { apiMajor: 1, apiMinor: 40, build: 40 };
  const nonce = hex('c313fab511c216b1505b1b2ea9903c40');
  const tik = () => vector('sevctl/tests/data/measurement/tik1.bin');
  const firmware = () => vector('sevctl/tests/data/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9');

  itWithVectors('measures a given launch digest', () => {
    const ld = hex('c64bd101fc9a4a2ce0a27c408d9200911f139a895469b04a40a6fa2890830d23');
    expect(computeMeasure(tik(), fw, 3, ld, nonce).toString('hex')).to.equal('96cc1bc56c48f60724c9ad7a250bdd16da5898d3b86fede29c03e9aac828048e');
  });

  itWithVectors('digests an OVMF image', () => {
    const ld = ovmfLaunchDigest({ firmware: firmware() });
    expect(computeMeasure(tik(), fw, 3, ld, nonce).toString('hex')).to.equal('a0c0dec08a2e252a5ba4d4478fb324de9d3c1f674f65076c64c535e2a2329819');
  });

  itWithVectors('digests OVMF with the kernel-hashes table', () => {
    const ld = ovmfLaunchDigest({
      firmware: firmware(),
      kernel: {
        kernel: vector('sevctl/tests/data/measurement/vmlinuz-fake'),
        initrd: vector('sevctl/tests/data/measurement/initrd-fake'),
        cmdline: 'foo bar baz fake kernel=cmdline',
      },
    });
    expect(ld.toString('hex')).to.equal('4b47fec6f851487c33714c8a00a832a1b705ad0a7cac4a647388eccfa9f0c570');
    expect(computeMeasure(tik(), fw, 3, ld, nonce).toString('hex')).to.equal('8776ae61b5909d55bb1062d63781dff52374a0460c3d4dac2b86cb9de7d63f0b');
  });

  itWithVectors('digests SEV-ES VMSAs for 4 vCPUs', () => {
    const expected = Buffer.from('/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny', 'base64');
    const ld = ovmfLaunchDigest({
      firmware: firmware(),
      es: { vcpus: 4, bootVmsa: vector('sevctl/tests/data/vmsa0.bin'), apVmsa: vector('sevctl/tests/data/vmsa1.bin') },
    });
    const measure = computeMeasure(tik(), { apiMajor: 1, apiMinor: 49, build: 6 }, 5, ld, expected.subarray(32));
    expect(measure).to.deep.equal(expected.subarray(0, 32));
  });
});

describe('sev: conformance with sevctl secret build', () => {
  const measure = Buffer.from('TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS', 'base64').subarray(0, 32);
  const iv = hex('ac5474ed4dd32c7d989ec523d92559ec');

  itWithVectors('builds the secret table, header and payload', () => {
    const keys = { tik: vector('sevctl/tests/data/secret/tik1.bin'), tek: vector('sevctl/tests/data/secret/tek1.bin') };
    const table = buildSecretTable([{ guid: '736869e5-84f0-4973-92ec-06879ce3da0b', data: vector('sevctl/tests/data/secret/secret1.txt') }]);
    expect(table.toString('hex')).to.equal(
      '42f5741edd71664d963eef4287ff173b3a000000e5696873f084734992ec06879ce3da0b260000004d592d4c554b532d50415353504852415345000000000000',
    );
    const packet = buildSecretPacket(keys, measure, table, iv);
    expect(packet.header.toString('hex')).to.equal('00000000ac5474ed4dd32c7d989ec523d92559ecbc152cde610e17f0aef557334a2d4fca42c22c4312e3b5b85a3d47b0aac857e5');
    expect(packet.payload.toString('hex')).to.equal(
      'd14ddee4f717bf4516f87e2d48114a39d0987ca135fa3dfc05cd9fb8ed7a9988b223eb16c7b20d7e7fa58188f9e862f5db2ca29c36be9557c20b00ffdb0e5c3c',
    );
  });

  it('opens its own packet and refuses a wrong measurement or an altered byte', () => {
    const keys = { tek: hex('11'.repeat(16)), tik: hex('22'.repeat(16)) };
    const table = buildSecretTable([{ guid: '736869e5-84f0-4973-92ec-06879ce3da0b', data: Buffer.from('disk passphrase') }]);
    const packet = buildSecretPacket(keys, measure, table, iv);
    const header = parseSecretHeader(packet.header);
    const plain = openSecretPacket(keys, measure, header, packet.payload, table.length);
    expect(parseSecretTable(plain)).to.deep.equal([{ guid: '736869e5-84f0-4973-92ec-06879ce3da0b', data: Uint8Array.from(Buffer.from('disk passphrase')) }]);
    const otherMeasure = Buffer.from(measure);
    otherMeasure[0]! ^= 1;
    expect(() => openSecretPacket(keys, otherMeasure, header, packet.payload, table.length)).to.throw('MAC');
    const altered = Buffer.from(packet.payload);
    altered[5]! ^= 0x80;
    expect(() => openSecretPacket(keys, measure, header, altered, table.length)).to.throw('MAC');
  });
});
