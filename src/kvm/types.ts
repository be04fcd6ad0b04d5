// The VM and vCPU interfaces that boot, device and SEV code program against. Two implementations:
// the real one over /dev/kvm (vm.ts, vcpu.ts) and an in-memory one for tests (mock/).
import type { Bus } from '../devices/bus.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { EventFd } from '../sys/eventfd.js';

/** struct kvm_regs. 64-bit registers are always bigint. */
export interface Regs {
  rax: bigint;
  rbx: bigint;
  rcx: bigint;
  rdx: bigint;
  rsi: bigint;
  rdi: bigint;
  rsp: bigint;
  rbp: bigint;
  r8: bigint;
  r9: bigint;
  r10: bigint;
  r11: bigint;
  r12: bigint;
  r13: bigint;
  r14: bigint;
  r15: bigint;
  rip: bigint;
  rflags: bigint;
}

/** struct kvm_segment: a segment register in its hidden (descriptor-cache) form. */
export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
  padding: number;
}

/** struct kvm_dtable (GDTR/IDTR). */
export interface DescriptorTable {
  base: bigint;
  limit: number;
  padding: number[];
}

/** struct kvm_sregs. */
export interface Sregs {
  cs: Segment;
  ds: Segment;
  es: Segment;
  fs: Segment;
  gs: Segment;
  ss: Segment;
  tr: Segment;
  ldt: Segment;
  gdt: DescriptorTable;
  idt: DescriptorTable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apic_base: bigint;
  interrupt_bitmap: bigint[];
}

/** struct kvm_fpu (fxsave layout). `fpr` is 8x16 bytes, `xmm` 16x16 bytes. */
export interface Fpu {
  fpr: Uint8Array;
  fcw: number;
  fsw: number;
  ftwx: number;
  pad1: number;
  last_opcode: number;
  last_ip: bigint;
  last_dp: bigint;
  xmm: Uint8Array;
  mxcsr: number;
  pad2: number;
}

export interface MsrEntry {
  index: number;
  data: bigint;
}

/** struct kvm_cpuid_entry2 without its padding. */
export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export interface ClockData {
  clock: bigint;
  flags: number;
  realtime: bigint;
  host_tsc: bigint;
}

/** A guest-physical RAM slot (struct kvm_userspace_memory_region). */
export interface MemorySlot {
  slot: number;
  guestAddress: number;
  size: number;
  hostAddress: bigint;
  flags?: number;
}

/** Where an ioeventfd listens: a port or an MMIO address, of `length` bytes (0 = any), optionally one value only. */
export interface IoEventSpec {
  space: 'pio' | 'mmio';
  address: number;
  length: 0 | 1 | 2 | 4 | 8;
  datamatch?: bigint;
}

/**
 * Why KVM_RUN returned. `data` views are live: for `io` in and `mmio` reads the VMM writes the answer
 * into them before the next run(). An `io` exit carries `count` accesses of `size` bytes (string I/O).
 */
export type VcpuExit =
  | { kind: 'io'; direction: 'in' | 'out'; port: number; size: number; count: number; data: Uint8Array }
  | { kind: 'mmio'; address: number; isWrite: boolean; data: Uint8Array }
  | { kind: 'hlt' }
  | { kind: 'shutdown' }
  | { kind: 'fail-entry'; hardwareReason: bigint; cpu: number }
  | { kind: 'internal-error'; suberror: number; data: bigint[] }
  | { kind: 'system-event'; type: number; data: bigint[] }
  | { kind: 'irq-window-open' }
  | { kind: 'intr' }
  | { kind: 'exception'; exception: number; errorCode: number }
  | { kind: 'unknown'; reason: number; hardwareReason: bigint };

export interface VirtualCpu {
  readonly id: number;
  getRegs(): Regs;
  setRegs(regs: Regs): void;
  getSregs(): Sregs;
  setSregs(sregs: Sregs): void;
  getFpu(): Fpu;
  setFpu(fpu: Partial<Fpu>): void;
  getMsrs(indices: readonly number[]): MsrEntry[];
  setMsrs(entries: readonly MsrEntry[]): void;
  getCpuid2(): CpuidEntry[];
  setCpuid2(entries: readonly CpuidEntry[]): void;
  /** The local APIC register page (KVM_APIC_REG_SIZE bytes). */
  getLapic(): Uint8Array;
  setLapic(regs: Uint8Array): void;
  getMpState(): number;
  setMpState(state: number): void;
  /** Enters the guest until the next exit that needs the VMM. */
  run(): VcpuExit;
  /** While set, run() returns at once with `intr`: how another thread makes a vCPU stop. */
  setImmediateExit(on: boolean): void;
  close(): void;
}

export interface VirtualMachine {
  checkExtension(capability: number): number;
  setUserMemoryRegion(slot: MemorySlot): void;
  /** Maps every region of `memory` into the guest, one slot each, from slot `firstSlot`. */
  registerMemory(memory: GuestMemory, firstSlot?: number): void;
  setTssAddress(address: number): void;
  setIdentityMapAddress(address: number): void;
  createIrqchip(): void;
  createPit2(flags?: number): void;
  setIrqLine(irq: number, level: boolean): void;
  /** Lets a write to `eventfd` inject interrupt `gsi` inside the kernel. */
  irqfd(eventfd: EventFd, gsi: number): void;
  irqfdDeassign(eventfd: EventFd, gsi: number): void;
  /** Turns a guest write matching `spec` into a signal on `eventfd`, with no exit to the VMM. */
  ioeventfd(eventfd: EventFd, spec: IoEventSpec): void;
  ioeventfdDeassign(eventfd: EventFd, spec: IoEventSpec): void;
  getClock(): ClockData;
  /**
   * KVM_MEMORY_ENCRYPT_OP with a caller-built command (struct kvm_sev_cmd for SEV). The kernel writes
   * the firmware error back into `command`, which the caller reads also after a SysError.
   */
  memoryEncryptOp(command: Uint8Array): void;
  /** Pins host memory that backs encrypted guest memory (KVM_MEMORY_ENCRYPT_REG_REGION). */
  registerEncryptedRegion(hostAddress: bigint, size: number): void;
  unregisterEncryptedRegion(hostAddress: bigint, size: number): void;
  createVcpu(id: number): VirtualCpu;
  close(): void;
}

/** The two address spaces vCPU exits are dispatched to. */
export interface IoBuses {
  readonly pio: Bus;
  readonly mmio: Bus;
}

/** Why a vCPU stopped running, as the main thread learns it. */
export type VcpuStopReason = 'hlt' | 'shutdown' | 'system-event' | 'fail-entry' | 'internal-error' | 'unhandled-exit' | 'error' | 'stopped';

export interface VcpuStop {
  vcpu: number;
  reason: VcpuStopReason;
  /** One line for a human: `vCPU 0: KVM_EXIT_FAIL_ENTRY, hardware reason 0x80000021`. */
  message: string;
  /** For `system-event`: KVM_SYSTEM_EVENT_SHUTDOWN, _RESET, _CRASH, ... */
  systemEvent?: number;
  /** Registers at the time of the stop, when they could be read. */
  regs?: Regs;
}

/** Runs a VM's vCPUs until they stop: in worker threads (VcpuThreads) or inline on the main thread. */
export interface VcpuRunner {
  start(): void;
  /** Stops every vCPU whatever it is doing; resolves with every vCPU's stop. */
  stop(): Promise<VcpuStop[]>;
  /** Resolves once every vCPU has stopped, for whatever reason. */
  readonly stopped: Promise<VcpuStop[]>;
  /** Called once per vCPU as it stops. */
  onStop(listener: (stop: VcpuStop) => void): void;
}
