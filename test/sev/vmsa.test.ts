import { expect } from 'chai';
import { computeMeasure } from '../../src/sev/measurement.js';
import { ovmfLaunchDigest } from '../../src/sev/ovmf-digest.js';
import { VMSA_SIZE, cpuSignature, emptyVmsaState, encodeVmsa, ovmfApResetAddress, resetVmsa } from '../../src/sev/vmsa.js';
import { itWithVectors, vector } from './vectors.js';

const OVMF = 'sevctl/tests/data/OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9';
const sku = { family: 25, model: 1, stepping: 1 };

describe('sev: SEV-ES VMSA', () => {
  it('places fields at their save-area offsets', () => {
    const s = emptyVmsaState();
    s.rip = 0x1122334455667788n;
    s.cs = { selector: 0xf000, attrib: 0x9b, limit: 0xffff, base: 0xffff0000n };
    s.rax = 1n;
    s.xcr0 = 7n;
    const page = Buffer.from(encodeVmsa(s));
    expect(page.length).to.equal(VMSA_SIZE);
    expect(page.readBigUInt64LE(0x178)).to.equal(0x1122334455667788n);
    expect(page.readUInt16LE(0x10)).to.equal(0xf000);
    expect(page.readBigUInt64LE(0x18)).to.equal(0xffff0000n);
    expect(page.readBigUInt64LE(0x1f8)).to.equal(1n);
    expect(page.readBigUInt64LE(0x3e8)).to.equal(7n);
  });

  it('encodes the CPUID signature as KVM puts it in rdx', () => {
    expect(cpuSignature({ family: 25, model: 1, stepping: 1 })).to.equal(0xa00f11n);
    expect(cpuSignature({ family: 23, model: 0x31, stepping: 0 })).to.equal(0x830f10n);
  });

  itWithVectors("rebuilds sevctl's QEMU/OVMF VMSAs byte for byte and their SEV-ES measurement", () => {
    const ovmf = vector(OVMF);
    const ap = ovmfApResetAddress(ovmf);
    const boot = resetVmsa({ vmm: 'qemu', cpu: 0, sku });
    const other = resetVmsa({ vmm: 'qemu', cpu: 1, sku, apResetAddress: ap });
    expect(Buffer.from(boot)).to.deep.equal(vector('sevctl/tests/data/vmsa0.bin'));
    expect(Buffer.from(other)).to.deep.equal(vector('sevctl/tests/data/vmsa1.bin'));
    const expected = Buffer.from('/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny', 'base64');
    const ld = ovmfLaunchDigest({ firmware: ovmf, es: { vcpus: 4, bootVmsa: boot, apVmsa: other } });
    const tik = vector('sevctl/tests/data/measurement/tik1.bin');
    expect(computeMeasure(tik, { apiMajor: 1, apiMinor: 49, build: 6 }, 5, ld, expected.subarray(32))).to.deep.equal(expected.subarray(0, 32));
  });

  it("refuses an image without OVMF's footer table", () => {
    expect(() => ovmfApResetAddress(new Uint8Array(4096))).to.throw('no OVMF GUIDed table footer');
  });

  it("lays out libkrun's boot and AP state", () => {
    const bsp = Buffer.from(resetVmsa({ vmm: 'krun', cpu: 0 }));
    const ap = Buffer.from(resetVmsa({ vmm: 'krun', cpu: 1 }));
    expect(bsp.readBigUInt64LE(0x330)).to.equal(0x7000n); // rsi: the zero page
    expect(bsp.readBigUInt64LE(0x1d8)).to.equal(0x8ff0n); // rsp
    expect(ap.readBigUInt64LE(0x18)).to.equal(0x91000n); // cs.base of the AP trampoline
    expect(ap.readBigUInt64LE(0x178)).to.equal(0n);
  });
});
