import { expect } from 'chai';
import { BootSegments } from '../../src/boot/boot-tables.js';
import { LowMemory } from '../../src/boot/layout.js';
import { Msr, setUpVcpu, type VcpuSetup } from '../../src/boot/vcpu-state.js';
import { KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED } from '../../src/kvm/constants.js';
import { MockVm } from '../kvm/mock/mock-vm.js';
import type { CpuidEntry } from '../../src/kvm/types.js';

const supportedCpuid: CpuidEntry[] = [{ function: 1, index: 0, flags: 0, eax: 0x00a00f11, ebx: 0, ecx: 0, edx: 0 }];
const direct = (vcpus: number): VcpuSetup => ({
  supportedCpuid,
  vcpus,
  memoryEncryption: false,
  tscDeadlineTimer: true,
  bsp: { kind: 'direct', entry: 0x100_0200, zeroPage: LowMemory.zeroPage },
});
const lvt = (lapic: Uint8Array, reg: number): number => new DataView(lapic.buffer).getUint32(reg, true);

describe('vCPU start state (mocked KVM)', () => {
  it('puts the BSP at the 64-bit entry: rsi = zero page, long mode, paging on the boot tables, flat __BOOT_CS/__BOOT_DS', () => {
    const vm = new MockVm();
    const bsp = vm.createVcpu(0);
    setUpVcpu(bsp, direct(2));
    const regs = bsp.getRegs();
    expect(regs.rip).to.equal(0x100_0200n);
    expect(regs.rsi).to.equal(BigInt(LowMemory.zeroPage));
    expect(regs.rflags).to.equal(2n);
    const s = bsp.getSregs();
    expect(s.cr0 & 0x8000_0001n).to.equal(0x8000_0001n);
    expect(s.cr4 & 0x20n).to.equal(0x20n);
    expect(s.efer & 0x500n).to.equal(0x500n);
    expect(s.cr3).to.equal(BigInt(LowMemory.pml4));
    expect(s.cs).to.include({ selector: BootSegments.code64.selector, l: 1, db: 0, present: 1, type: 0xb, s: 1, dpl: 0 });
    expect(s.cs.limit).to.equal(0xffff_ffff);
    for (const seg of [s.ds, s.es, s.ss]) expect(seg).to.include({ selector: BootSegments.data.selector, type: 0x3, db: 1, present: 1 });
    expect(s.tr).to.include({ selector: BootSegments.tss.selector, type: 0xb, s: 0, present: 1 });
    expect(s.gdt.base).to.equal(BigInt(LowMemory.gdt));
    expect(bsp.getFpu()).to.include({ fcw: 0x37f, mxcsr: 0x1f80 });
    expect(bsp.getMpState()).to.equal(KVM_MP_STATE_RUNNABLE);
  });

  it('programs every vCPU with its CPUID, the boot MSRs and LINT0 ExtINT / LINT1 NMI; APs wait for SIPI', () => {
    const vm = new MockVm();
    const ap = vm.createVcpu(1);
    const before = ap.getRegs();
    setUpVcpu(ap, direct(2));
    expect(ap.getCpuid2()[0]!.ebx >>> 24).to.equal(1);
    expect(ap.getMsrs([Msr.MTRR_DEF_TYPE, Msr.IA32_MISC_ENABLE])).to.deep.equal([
      { index: Msr.MTRR_DEF_TYPE, data: 0x806n },
      { index: Msr.IA32_MISC_ENABLE, data: 1n },
    ]);
    const lapic = ap.getLapic();
    expect((lvt(lapic, 0x350) >> 8) & 7).to.equal(7);
    expect((lvt(lapic, 0x360) >> 8) & 7).to.equal(4);
    expect(ap.getMpState()).to.equal(KVM_MP_STATE_UNINITIALIZED);
    expect(ap.getRegs()).to.deep.equal(before, "an AP starts where the kernel's SIPI says, not at the kernel entry");
  });

  it('leaves the BSP in the reset state on the firmware path', () => {
    const vm = new MockVm();
    const bsp = vm.createVcpu(0);
    const [regs, sregs] = [bsp.getRegs(), bsp.getSregs()];
    setUpVcpu(bsp, { ...direct(1), bsp: { kind: 'firmware' } });
    expect(bsp.getRegs()).to.deep.equal(regs);
    expect(bsp.getSregs()).to.deep.equal(sregs);
    expect(bsp.getMpState()).to.equal(KVM_MP_STATE_RUNNABLE);
    expect(bsp.getCpuid2()).to.have.length(1);
  });
});
