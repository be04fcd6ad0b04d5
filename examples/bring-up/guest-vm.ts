// What the bring-up steps share: a VM with a little RAM and one vCPU, made with the same calls the VMM
// makes in src/vmm/machine.ts (KVM_CREATE_VM, one memory slot, the TSS address, KVM_CREATE_VCPU), the
// two CPU states the steps start it in (real mode, and the 64-bit state Linux is entered in), and a hex
// formatter for what the steps print.
import { relative } from 'node:path';
import { Kvm } from '../../src/kvm/kvm.js';
import type { Vcpu } from '../../src/kvm/vcpu.js';
import type { Vm } from '../../src/kvm/vm.js';
import type { Placement } from '../../src/boot/boot-plan.js';
import { directEntryTables } from '../../src/boot/boot-tables.js';
import { LowMemory, TSS_ADDRESS } from '../../src/boot/layout.js';
import { bootMsrs, directEntryRegs, directEntrySregs } from '../../src/boot/vcpu-state.js';
import { probeKvm } from '../../src/kvm/probe.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { errorMessage } from '../../src/sys/error-message.js';
import { projectRoot } from '../../src/sys/project-paths.js';

export interface TinyVm {
  kvm: Kvm;
  vm: Vm;
  memory: GuestMemory;
  vcpu: Vcpu;
  close(): void;
}

/**
 * A step that cannot go on says why in one line on stderr and exits with status 1; where this host has
 * no usable /dev/kvm, the line also gives the command that runs the step in the lab. Call it first.
 */
export function failInOneLine(): void {
  process.on('uncaughtException', (error) => {
    const kvm = probeKvm();
    const step = relative(projectRoot(), process.argv[1] ?? '');
    const hint = kvm.available ? '' : `; without KVM, run the step in the lab: node bin/ts-vmm.js lab --exec -- node /lab/project/${step}`;
    process.stderr.write(`${errorMessage(error)}${hint}\n`);
    process.exit(1);
  });
}

export const hex = (value: number | bigint, digits = 0): string => `0x${value.toString(16).padStart(digits, '0')}`;

/** RAM at guest-physical 0 of `ramBytes`, and vCPU 0 still in the state KVM creates it in (real mode). */
export function tinyVm(ramBytes: number): TinyVm {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const memory = GuestMemory.anonymous([{ guestAddress: 0, size: ramBytes }]);
  vm.registerMemory(memory);
  // Intel VMX needs three pages for the real-mode TSS; nothing of the guest's may be there.
  vm.setTssAddress(TSS_ADDRESS);
  const vcpu = vm.createVcpu(0);
  return {
    kvm,
    vm,
    memory,
    vcpu,
    close() {
      vcpu.close();
      vm.close();
      kvm.close();
    },
  };
}

/**
 * A real-mode guest: `code` at `entry`, and the vCPU about to fetch it. At reset CS:IP is f000:fff0 with
 * CS base 0xffff0000; we make CS base 0 so IP is a plain guest-physical address.
 */
export function realModeGuest(code: readonly number[], entry = 0x1000, ramBytes = 0x10000): TinyVm {
  const guest = tinyVm(ramBytes);
  guest.memory.write(entry, Uint8Array.from(code));
  const sregs = guest.vcpu.getSregs();
  sregs.cs.base = 0n;
  sregs.cs.selector = 0;
  guest.vcpu.setSregs(sregs);
  // rflags bit 1 is reserved and must be set; interrupts stay off.
  guest.vcpu.setRegs({ ...guest.vcpu.getRegs(), rip: BigInt(entry), rflags: 0x2n });
  return guest;
}

/**
 * The state the 64-bit boot protocol asks for, as the VMM gives it to Linux: src/boot's GDT, empty IDT
 * and identity page tables in RAM, the boot MSRs, long mode with paging on, rip = `entry`. Returns the
 * tables placed.
 */
export function enterLongMode(guest: TinyVm, entry: number): Placement[] {
  const tables = directEntryTables();
  for (const p of tables) guest.memory.write(p.guestAddress, p.bytes);
  const { kvm, vcpu } = guest;
  vcpu.setCpuid2(kvm.getSupportedCpuid());
  vcpu.setMsrs(bootMsrs());
  vcpu.setSregs(directEntrySregs(vcpu.getSregs()));
  vcpu.setRegs(directEntryRegs(entry, LowMemory.zeroPage));
  return tables;
}
