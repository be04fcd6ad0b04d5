// A minimal KVM VM for tests: 64 KiB of RAM at 0, vCPUs in real mode with CS base 0 at `entry`,
// optionally the in-kernel irqchip (which must exist before the vCPUs).
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Kvm } from '../../src/kvm/kvm.js';
import type { Vcpu } from '../../src/kvm/vcpu.js';
import type { Vm } from '../../src/kvm/vm.js';

export interface RealModeVm {
  kvm: Kvm;
  vm: Vm;
  memory: GuestMemory;
  vcpus: Vcpu[];
  close(): void;
}

export function realModeVm(code: readonly number[], { entry = 0x1000, vcpus = 1, irqchip = false } = {}): RealModeVm {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const memory = GuestMemory.anonymous([{ guestAddress: 0, size: 0x10000 }]);
  vm.registerMemory(memory);
  vm.setTssAddress(0xfffb_d000);
  if (irqchip) vm.createIrqchip();
  memory.write(entry, new Uint8Array(code));
  const cpus = Array.from({ length: vcpus }, (_, id) => {
    const vcpu = vm.createVcpu(id);
    const sregs = vcpu.getSregs();
    sregs.cs.base = 0n;
    sregs.cs.selector = 0;
    vcpu.setSregs(sregs);
    vcpu.setRegs({ ...vcpu.getRegs(), rip: BigInt(entry), rflags: 0x2n });
    return vcpu;
  });
  return {
    kvm,
    vm,
    memory,
    vcpus: cpus,
    close() {
      for (const c of cpus) c.close();
      vm.close();
      kvm.close();
    },
  };
}
