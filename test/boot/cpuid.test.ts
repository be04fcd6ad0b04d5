import { expect } from 'chai';
import { normaliseCpuid } from '../../src/boot/cpuid.js';
import type { CpuidEntry } from '../../src/kvm/types.js';

const entry = (fn: number, index = 0, regs: Partial<CpuidEntry> = {}): CpuidEntry => ({
  function: fn,
  index,
  flags: 0,
  eax: 0,
  ebx: 0,
  ecx: 0,
  edx: 0,
  ...regs,
});

const supported: CpuidEntry[] = [
  entry(0x1, 0, { ebx: 0xff00_00ff, ecx: 0x1, edx: 0 }),
  entry(0xb, 0),
  entry(0xb, 1),
  entry(0xb, 2),
  entry(0x8000_0001, 0, { ecx: 0 }),
  entry(0x8000_0008, 0, { ecx: 0xffff }),
  entry(0x8000_001d, 0, { eax: (1 << 5) | (0xfff << 14) }),
  entry(0x8000_001d, 3, { eax: 3 << 5 }),
  entry(0x8000_001e, 0, { eax: 7, ebx: 0xffff }),
  entry(0x8000_001f, 0, { eax: 0x1b, ebx: 0x16f }),
];

const find = (entries: CpuidEntry[], fn: number, index = 0): CpuidEntry => entries.find((e) => e.function === fn && e.index === index)!;

describe('CPUID normalisation', () => {
  it('gives each vCPU its APIC id and the package its vCPU count, and marks the hypervisor', () => {
    const out = normaliseCpuid(supported, { vcpu: 2, vcpus: 4, memoryEncryption: false, tscDeadlineTimer: false });
    const leaf1 = find(out, 0x1);
    expect(leaf1.ebx >>> 24).to.equal(2);
    expect((leaf1.ebx >> 16) & 0xff).to.equal(4);
    expect(leaf1.ebx & 0xff).to.equal(0xff, 'brand index kept');
    expect(leaf1.ecx >>> 31).to.equal(1);
    expect(leaf1.ecx & 1).to.equal(1, 'other feature bits kept');
    expect((leaf1.edx >> 28) & 1).to.equal(1, 'HTT: more than one logical processor');
    expect(find(out, 0x8000_001e).eax).to.equal(2);
    expect(find(out, 0x8000_0008).ecx & 0xff).to.equal(3);
    expect((find(out, 0x8000_0008).ecx >> 12) & 0xf).to.equal(2);
  });

  it('describes one thread per core and N cores in the extended topology leaf', () => {
    const out = normaliseCpuid(supported, { vcpu: 1, vcpus: 3, memoryEncryption: false, tscDeadlineTimer: false });
    const [smt, core, end] = [find(out, 0xb, 0), find(out, 0xb, 1), find(out, 0xb, 2)];
    expect(smt).to.include({ eax: 0, ebx: 1, ecx: 0x100, edx: 1 });
    expect(core).to.include({ eax: 2, ebx: 3, ecx: 0x201, edx: 1 });
    expect(end).to.include({ eax: 0, ebx: 0, ecx: 2, edx: 1 });
  });

  it('shares only the L3 among vCPUs in the AMD cache topology', () => {
    const out = normaliseCpuid(supported, { vcpu: 0, vcpus: 4, memoryEncryption: false, tscDeadlineTimer: false });
    expect((find(out, 0x8000_001d, 0).eax >> 14) & 0xfff).to.equal(0);
    expect((find(out, 0x8000_001d, 3).eax >> 14) & 0xfff).to.equal(3);
  });

  it('hides SEV from guests that do not run encrypted, and keeps it for those that do', () => {
    expect(find(normaliseCpuid(supported, { vcpu: 0, vcpus: 1, memoryEncryption: false, tscDeadlineTimer: false }), 0x8000_001f)).to.include({
      eax: 0,
      ebx: 0,
    });
    expect(find(normaliseCpuid(supported, { vcpu: 0, vcpus: 1, memoryEncryption: true, tscDeadlineTimer: false }), 0x8000_001f)).to.include({
      eax: 0x1b,
      ebx: 0x16f,
    });
  });

  it('announces the TSC-deadline timer only when KVM emulates it', () => {
    const bit = (tscDeadlineTimer: boolean): number =>
      (find(normaliseCpuid(supported, { vcpu: 0, vcpus: 1, memoryEncryption: false, tscDeadlineTimer }), 0x1).ecx >>> 24) & 1;
    expect(bit(true)).to.equal(1);
    expect(bit(false)).to.equal(0);
  });

  it('leaves a single vCPU without HTT or CmpLegacy, and does not modify its input', () => {
    const copy = structuredClone(supported);
    const out = normaliseCpuid(supported, { vcpu: 0, vcpus: 1, memoryEncryption: false, tscDeadlineTimer: false });
    expect((find(out, 0x1).edx >> 28) & 1).to.equal(0);
    expect((find(out, 0x8000_0001).ecx >> 1) & 1).to.equal(0);
    expect(supported).to.deep.equal(copy);
    expect(() => normaliseCpuid(supported, { vcpu: 4, vcpus: 4, memoryEncryption: false, tscDeadlineTimer: false })).to.throw(RangeError);
  });
});
