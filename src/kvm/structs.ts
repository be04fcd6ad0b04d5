// The KVM structs ts-vmm exchanges with the kernel, declared once with their C names so the ABI test
// checks each size and member offset against linux/kvm.h and asm/kvm.h.
import { koffi } from '../sys/koffi.js';
import { cStruct } from '../sys/abi.js';

const KVM = 'linux/kvm.h';
const u8 = 'uint8';
const u16 = 'uint16';
const u32 = 'uint32';
const u64 = 'uint64';
const array = (type: string, length: number) => koffi.array(type, length);

export const kvmRegs = cStruct('struct kvm_regs', KVM, {
  rax: u64,
  rbx: u64,
  rcx: u64,
  rdx: u64,
  rsi: u64,
  rdi: u64,
  rsp: u64,
  rbp: u64,
  r8: u64,
  r9: u64,
  r10: u64,
  r11: u64,
  r12: u64,
  r13: u64,
  r14: u64,
  r15: u64,
  rip: u64,
  rflags: u64,
});

export const kvmSegment = cStruct('struct kvm_segment', KVM, {
  base: u64,
  limit: u32,
  selector: u16,
  type: u8,
  present: u8,
  dpl: u8,
  db: u8,
  s: u8,
  l: u8,
  g: u8,
  avl: u8,
  unusable: u8,
  padding: u8,
});

export const kvmDtable = cStruct('struct kvm_dtable', KVM, { base: u64, limit: u16, padding: array(u16, 3) });

/** KVM_NR_INTERRUPTS (256) bits of pending external interrupts. */
const INTERRUPT_BITMAP_WORDS = 4;

export const kvmSregs = cStruct('struct kvm_sregs', KVM, {
  cs: kvmSegment.type,
  ds: kvmSegment.type,
  es: kvmSegment.type,
  fs: kvmSegment.type,
  gs: kvmSegment.type,
  ss: kvmSegment.type,
  tr: kvmSegment.type,
  ldt: kvmSegment.type,
  gdt: kvmDtable.type,
  idt: kvmDtable.type,
  cr0: u64,
  cr2: u64,
  cr3: u64,
  cr4: u64,
  cr8: u64,
  efer: u64,
  apic_base: u64,
  interrupt_bitmap: array(u64, INTERRUPT_BITMAP_WORDS),
});

export const kvmFpu = cStruct('struct kvm_fpu', KVM, {
  fpr: array(u8, 8 * 16),
  fcw: u16,
  fsw: u16,
  ftwx: u8,
  pad1: u8,
  last_opcode: u16,
  last_ip: u64,
  last_dp: u64,
  xmm: array(u8, 16 * 16),
  mxcsr: u32,
  pad2: u32,
});

export const kvmMsrEntry = cStruct('struct kvm_msr_entry', KVM, { index: u32, reserved: u32, data: u64 });
/** Header of struct kvm_msrs; `entries[nmsrs]` (struct kvm_msr_entry) follow it. */
export const kvmMsrs = cStruct('struct kvm_msrs', KVM, { nmsrs: u32, pad: u32 });
/** Header of struct kvm_msr_list; `indices[nmsrs]` (u32) follow it. */
export const kvmMsrList = cStruct('struct kvm_msr_list', KVM, { nmsrs: u32 });

export const kvmCpuidEntry2 = cStruct('struct kvm_cpuid_entry2', KVM, {
  function: u32,
  index: u32,
  flags: u32,
  eax: u32,
  ebx: u32,
  ecx: u32,
  edx: u32,
  padding: array(u32, 3),
});
/** Header of struct kvm_cpuid2; `entries[nent]` (struct kvm_cpuid_entry2) follow it. */
export const kvmCpuid2 = cStruct('struct kvm_cpuid2', KVM, { nent: u32, padding: u32 });

/** KVM_APIC_REG_SIZE */
export const APIC_REGISTER_PAGE = 0x400;
export const kvmLapicState = cStruct('struct kvm_lapic_state', KVM, { regs: array('char', APIC_REGISTER_PAGE) });

export const kvmMpState = cStruct('struct kvm_mp_state', KVM, { mp_state: u32 });

export const kvmUserspaceMemoryRegion = cStruct('struct kvm_userspace_memory_region', KVM, {
  slot: u32,
  flags: u32,
  guest_phys_addr: u64,
  memory_size: u64,
  userspace_addr: u64,
});

/** `irq` shares an anonymous union with `status`, which ts-vmm never reads. */
export const kvmIrqLevel = cStruct('struct kvm_irq_level', KVM, { irq: u32, level: u32 });

export const kvmIrqfd = cStruct('struct kvm_irqfd', KVM, { fd: u32, gsi: u32, flags: u32, resamplefd: u32, pad: array(u8, 16) });

export const kvmIoeventfd = cStruct('struct kvm_ioeventfd', KVM, {
  datamatch: u64,
  addr: u64,
  len: u32,
  fd: 'int32',
  flags: u32,
  pad: array(u8, 36),
});

export const kvmPitConfig = cStruct('struct kvm_pit_config', KVM, { flags: u32, pad: array(u32, 15) });

export const kvmClockData = cStruct('struct kvm_clock_data', KVM, {
  clock: u64,
  flags: u32,
  pad0: u32,
  realtime: u64,
  host_tsc: u64,
  pad: array(u32, 4),
});

export const kvmEncRegion = cStruct('struct kvm_enc_region', KVM, { addr: u64, size: u64 });

/**
 * The page KVM shares with each vCPU (mmap of the vCPU fd). Only the exits ts-vmm handles are spelled
 * out inside the anonymous union; `padding` gives the union its kernel size.
 */
export const kvmRun = cStruct(
  'struct kvm_run',
  KVM,
  {
    request_interrupt_window: u8,
    immediate_exit: u8,
    padding1: array(u8, 6),
    exit_reason: u32,
    ready_for_interrupt_injection: u8,
    if_flag: u8,
    flags: u16,
    cr8: u64,
    apic_base: u64,
    exit: koffi.union({
      hw: koffi.struct({ hardware_exit_reason: u64 }),
      fail_entry: koffi.struct({ hardware_entry_failure_reason: u64, cpu: u32 }),
      ex: koffi.struct({ exception: u32, error_code: u32 }),
      io: koffi.struct({ direction: u8, size: u8, port: u16, count: u32, data_offset: u64 }),
      mmio: koffi.struct({ phys_addr: u64, data: array(u8, 8), len: u32, is_write: u8 }),
      internal: koffi.struct({ suberror: u32, ndata: u32, data: array(u64, 16) }),
      system_event: koffi.struct({ type: u32, ndata: u32, data: array(u64, 16) }),
      padding: array('char', 256),
    }),
    kvm_valid_regs: u64,
    kvm_dirty_regs: u64,
    s: koffi.union({ padding: array('char', 2048) }),
  },
  { anonymous: ['exit'] },
);
