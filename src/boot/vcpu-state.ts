// The architectural state each vCPU starts with, as Firecracker sets it: CPUID, boot MSRs, the local
// APIC's LINT pins, and for the bootstrap processor either the direct 64-bit kernel entry (registers,
// FPU, segments, paging) or the reset state at which the firmware starts. Application processors wait
// for INIT/SIPI from the kernel.
import { KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED } from '../kvm/constants.js';
import type { CpuidEntry, MsrEntry, Regs, Segment, Sregs, VirtualCpu } from '../kvm/types.js';
import { BootSegments, GDT_LIMIT, IDT_LIMIT, type SegmentDescriptor } from './boot-tables.js';
import { normaliseCpuid } from './cpuid.js';
import { LowMemory } from './layout.js';

export const Msr = {
  IA32_TSC: 0x10,
  IA32_SYSENTER_CS: 0x174,
  IA32_SYSENTER_ESP: 0x175,
  IA32_SYSENTER_EIP: 0x176,
  IA32_MISC_ENABLE: 0x1a0,
  MTRR_DEF_TYPE: 0x2ff,
  STAR: 0xc000_0081,
  LSTAR: 0xc000_0082,
  CSTAR: 0xc000_0083,
  SYSCALL_MASK: 0xc000_0084,
  KERNEL_GS_BASE: 0xc000_0102,
} as const;

const MISC_ENABLE_FAST_STRING = 1n;
/** MTRRs enabled, default memory type write-back: without it the guest runs with RAM uncached. */
const MTRR_ENABLE_WRITE_BACK = (1n << 11n) | 6n;

export function bootMsrs(): MsrEntry[] {
  return [
    { index: Msr.IA32_SYSENTER_CS, data: 0n },
    { index: Msr.IA32_SYSENTER_ESP, data: 0n },
    { index: Msr.IA32_SYSENTER_EIP, data: 0n },
    { index: Msr.STAR, data: 0n },
    { index: Msr.CSTAR, data: 0n },
    { index: Msr.KERNEL_GS_BASE, data: 0n },
    { index: Msr.SYSCALL_MASK, data: 0n },
    { index: Msr.LSTAR, data: 0n },
    { index: Msr.IA32_TSC, data: 0n },
    { index: Msr.IA32_MISC_ENABLE, data: MISC_ENABLE_FAST_STRING },
    { index: Msr.MTRR_DEF_TYPE, data: MTRR_ENABLE_WRITE_BACK },
  ];
}

const APIC_LVT_LINT0 = 0x350;
const APIC_LVT_LINT1 = 0x360;
const DELIVERY_MODE_SHIFT = 8;
const DELIVERY_MODE_MASK = 0x700;
const DELIVERY_EXTINT = 7;
const DELIVERY_NMI = 4;

/** LINT0 takes the legacy PIC's ExtINT, LINT1 is the NMI line (what the MADT's LAPIC NMI entry says). */
export function configureLapicPins(lapic: Uint8Array): Uint8Array {
  const out = lapic.slice();
  const v = new DataView(out.buffer);
  const set = (reg: number, mode: number): void => {
    v.setUint32(reg, ((v.getUint32(reg, true) & ~DELIVERY_MODE_MASK) | (mode << DELIVERY_MODE_SHIFT)) >>> 0, true);
  };
  set(APIC_LVT_LINT0, DELIVERY_EXTINT);
  set(APIC_LVT_LINT1, DELIVERY_NMI);
  return out;
}

const X86_CR0_PE = 0x1n;
const X86_CR0_ET = 0x10n;
const X86_CR0_PG = 0x8000_0000n;
const X86_CR4_PAE = 0x20n;
const EFER_LME = 0x100n;
const EFER_LMA = 0x400n;
const RFLAGS_RESERVED = 0x2n;

/** The hidden part of a segment register for a GDT descriptor, as the CPU loads it. */
export function segmentFromDescriptor(d: SegmentDescriptor): Segment {
  const g = (d.flags >> 15) & 1;
  const present = (d.flags >> 7) & 1;
  return {
    base: BigInt(d.base),
    limit: g ? ((d.limit << 12) | 0xfff) >>> 0 : d.limit,
    selector: d.selector,
    type: d.flags & 0xf,
    present,
    dpl: (d.flags >> 5) & 3,
    db: (d.flags >> 14) & 1,
    s: (d.flags >> 4) & 1,
    l: (d.flags >> 13) & 1,
    g,
    avl: (d.flags >> 12) & 1,
    unusable: present ? 0 : 1,
    padding: 0,
  };
}

/** Long mode, paging on with the boot page tables, flat segments from the boot GDT. */
export function directEntrySregs(current: Sregs): Sregs {
  const data = segmentFromDescriptor(BootSegments.data);
  return {
    ...current,
    cs: segmentFromDescriptor(BootSegments.code64),
    ds: data,
    es: data,
    fs: data,
    gs: data,
    ss: data,
    tr: segmentFromDescriptor(BootSegments.tss),
    gdt: { base: BigInt(LowMemory.gdt), limit: GDT_LIMIT, padding: [0, 0, 0] },
    idt: { base: BigInt(LowMemory.idt), limit: IDT_LIMIT, padding: [0, 0, 0] },
    cr0: X86_CR0_PE | X86_CR0_ET | X86_CR0_PG,
    cr3: BigInt(LowMemory.pml4),
    cr4: X86_CR4_PAE,
    efer: EFER_LME | EFER_LMA,
  };
}

/** The 64-bit boot protocol: rsi holds the zero page, interrupts off. */
export function directEntryRegs(entry: number, zeroPage: number): Regs {
  const zero = 0n;
  return {
    rax: zero,
    rbx: zero,
    rcx: zero,
    rdx: zero,
    rsi: BigInt(zeroPage),
    rdi: zero,
    rsp: BigInt(LowMemory.stackTop),
    rbp: BigInt(LowMemory.stackTop),
    r8: zero,
    r9: zero,
    r10: zero,
    r11: zero,
    r12: zero,
    r13: zero,
    r14: zero,
    r15: zero,
    rip: BigInt(entry),
    rflags: RFLAGS_RESERVED,
  };
}

const FPU_CONTROL_DEFAULT = 0x37f;
const MXCSR_DEFAULT = 0x1f80;

export type BspEntry = { kind: 'direct'; entry: number; zeroPage: number } | { kind: 'firmware' };

export interface VcpuSetup {
  supportedCpuid: readonly CpuidEntry[];
  vcpus: number;
  memoryEncryption: boolean;
  tscDeadlineTimer: boolean;
  bsp: BspEntry;
}

/** Programs one vCPU before it first runs. vCPU 0 is the bootstrap processor. */
export function setUpVcpu(cpu: VirtualCpu, setup: VcpuSetup): void {
  cpu.setCpuid2(
    normaliseCpuid(setup.supportedCpuid, {
      vcpu: cpu.id,
      vcpus: setup.vcpus,
      memoryEncryption: setup.memoryEncryption,
      tscDeadlineTimer: setup.tscDeadlineTimer,
    }),
  );
  cpu.setMsrs(bootMsrs());
  cpu.setLapic(configureLapicPins(cpu.getLapic()));
  if (cpu.id !== 0) {
    cpu.setMpState(KVM_MP_STATE_UNINITIALIZED);
    return;
  }
  cpu.setMpState(KVM_MP_STATE_RUNNABLE);
  // On the firmware path the BSP keeps the architectural reset state KVM gave it: CS:IP = f000:fff0
  // with CS base 0xffff0000, so it fetches its first instruction from 0xfffffff0.
  if (setup.bsp.kind === 'firmware') return;
  cpu.setFpu({ fcw: FPU_CONTROL_DEFAULT, mxcsr: MXCSR_DEFAULT });
  cpu.setRegs(directEntryRegs(setup.bsp.entry, setup.bsp.zeroPage));
  cpu.setSregs(directEntrySregs(cpu.getSregs()));
}
