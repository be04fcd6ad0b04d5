import { spawn } from 'node:child_process';
import { expect } from 'chai';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_IOEVENTFD, KVM_CAP_IRQFD, KVM_CAP_USER_MEMORY, KVM_MP_STATE_RUNNABLE } from '../../src/kvm/constants.js';
import { Kvm } from '../../src/kvm/kvm.js';

const MSR_STAR = 0xc000_0081;
const MSR_LSTAR = 0xc000_0082;

describe('Kvm, Vm and Vcpu ioctls', () => {
  it('names a missing KVM device with a hint', () => {
    expect(() => Kvm.open('/dev/no-such-kvm')).to.throw('open /dev/no-such-kvm failed: ENOENT — no /dev/kvm: load kvm-intel or kvm-amd');
  });
});

describe('Kvm, Vm and Vcpu ioctls @kvm', () => {
  let kvm: Kvm;
  before(() => {
    kvm = Kvm.open();
  });
  after(() => kvm.close());

  it('reports the capabilities ts-vmm relies on', () => {
    for (const cap of [KVM_CAP_USER_MEMORY, KVM_CAP_IRQFD, KVM_CAP_IOEVENTFD, KVM_CAP_IMMEDIATE_EXIT]) {
      expect(kvm.checkExtension(cap), `capability ${cap}`).to.be.greaterThan(0);
    }
    expect(kvm.vcpuMmapSize).to.be.at.least(4096);
  });

  it('lists supported CPUID leaves and MSRs', () => {
    const cpuid = kvm.getSupportedCpuid();
    const leaf0 = cpuid.find((e) => e.function === 0)!;
    expect(leaf0.eax, 'highest basic leaf').to.be.greaterThan(0);
    const vendor = Buffer.from(new Uint32Array([leaf0.ebx, leaf0.edx, leaf0.ecx]).buffer).toString('latin1');
    expect(vendor).to.be.oneOf(['AuthenticAMD', 'GenuineIntel', 'HygonGenuine']);
    expect(kvm.getMsrIndexList()).to.include.members([MSR_STAR, MSR_LSTAR]);
    expect(kvm.getMsrFeatureIndexList()).to.be.an('array');
  });

  it('makes VMs while signals keep arriving (a KVM_CREATE_VM a signal interrupts is made again)', async () => {
    // A handled signal interrupts the ioctl; SIGWINCH is what a terminal sends a run whose window changes size.
    const handled = (): void => undefined;
    process.on('SIGWINCH', handled);
    const storm = spawn('/bin/sh', ['-c', `while kill -WINCH ${process.pid} 2>/dev/null; do :; done`], { stdio: 'ignore' });
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      for (let i = 0; i < 100; i++) kvm.createVm().close();
    } finally {
      storm.kill('SIGKILL');
      process.off('SIGWINCH', handled);
    }
  });

  it('round-trips vCPU state through the kernel', () => {
    const vm = kvm.createVm();
    vm.registerMemory(GuestMemory.anonymous([{ guestAddress: 0, size: 0x10000 }]));
    vm.setIdentityMapAddress(0xfffb_c000);
    vm.setTssAddress(0xfffb_d000);
    vm.createIrqchip();
    vm.createPit2();
    expect(vm.checkExtension(KVM_CAP_IRQFD), 'capabilities asked of the VM').to.be.greaterThan(0);
    expect(vm.getClock().clock).to.be.a('bigint');
    const vcpu = vm.createVcpu(0);
    expect(() => vm.createVcpu(0)).to.throw(/KVM_CREATE_VCPU failed: EEXIST — vCPU 0 already exists/);

    const regs = { ...vcpu.getRegs(), rax: 0x1122_3344_5566_7788n, r15: 0xffff_ffff_ffff_fffen, rip: 0xffff_ffff_8100_0000n };
    vcpu.setRegs(regs);
    expect(vcpu.getRegs()).to.deep.equal(regs);

    const sregs = vcpu.getSregs();
    sregs.gdt = { base: 0x500n, limit: 0x17, padding: [0, 0, 0] };
    sregs.ds = { ...sregs.ds, base: 0x1234_0000n, selector: 0x10 };
    vcpu.setSregs(sregs);
    const back = vcpu.getSregs();
    expect(back.gdt.base).to.equal(0x500n);
    expect(back.gdt.limit).to.equal(0x17);
    expect(back.ds.base).to.equal(0x1234_0000n);

    vcpu.setMsrs([{ index: MSR_LSTAR, data: 0xffff_ffff_8160_0000n }]);
    expect(vcpu.getMsrs([MSR_LSTAR])).to.deep.equal([{ index: MSR_LSTAR, data: 0xffff_ffff_8160_0000n }]);
    expect(() => vcpu.getMsrs([0x1234_5678])).to.throw('KVM_GET_MSRS: MSR 0x12345678 is not supported');

    const cpuid = kvm.getSupportedCpuid();
    vcpu.setCpuid2(cpuid);
    expect(vcpu.getCpuid2().length).to.equal(cpuid.length);

    const fpu = vcpu.getFpu();
    vcpu.setFpu({ ...fpu, mxcsr: 0x1f80, fcw: 0x37f });
    expect(vcpu.getFpu().fcw).to.equal(0x37f);

    const lapic = vcpu.getLapic();
    expect(lapic.length).to.equal(0x400);
    vcpu.setLapic(lapic);
    expect(() => vcpu.setLapic(new Uint8Array(10))).to.throw(/1024 bytes, got 10/);

    vcpu.setMpState(KVM_MP_STATE_RUNNABLE);
    expect(vcpu.getMpState()).to.equal(KVM_MP_STATE_RUNNABLE);
    vcpu.close();
    vm.close();
  });

  it('refuses overlapping and misaligned memory slots, naming them', () => {
    const vm = kvm.createVm();
    const memory = GuestMemory.anonymous([{ guestAddress: 0, size: 0x10000 }]);
    vm.registerMemory(memory);
    const hostAddress = (memory.regions[0]!.backing as { hostAddress: bigint }).hostAddress;
    expect(() => vm.setUserMemoryRegion({ slot: 1, guestAddress: 0x8000, size: 0x1000, hostAddress })).to.throw(
      'KVM_SET_USER_MEMORY_REGION failed: EEXIST — slot 1 at 0x8000 overlaps another slot',
    );
    expect(() => vm.setUserMemoryRegion({ slot: 2, guestAddress: 0x20800, size: 0x1000, hostAddress })).to.throw(/must be page-aligned/);
    expect(() => vm.registerMemory(GuestMemory.shared([{ guestAddress: 0x100000, size: 0x1000 }]), 3)).to.throw(/not mmap-backed/);
    vm.close();
  });
});
