// A vCPU whose guest is a script: each run() returns the next scripted exit, with the data buffer the
// VMM fills (reads) or finds (writes), exactly as kvm_run would carry it. Register state is plain
// memory, starting from the x86 reset state. Writes that match a registered ioeventfd signal it and
// cause no exit, as in KVM.
import { kvmLapicState } from '../../../src/kvm/structs.js';
import type { CpuidEntry, Fpu, MsrEntry, Regs, Segment, Sregs, VcpuExit, VirtualCpu } from '../../../src/kvm/types.js';
import type { MockVm } from './mock-vm.js';

/** One guest action. Values are little-endian numbers of `size` bytes. */
export type ScriptStep =
  | { io: 'out'; port: number; size: 1 | 2 | 4; value: number }
  | { io: 'in'; port: number; size: 1 | 2 | 4 }
  | { mmio: 'write'; address: number; size: 1 | 2 | 4 | 8; value: number | bigint }
  | { mmio: 'read'; address: number; size: 1 | 2 | 4 | 8 }
  | { exit: VcpuExit };

/** A scripted access after the VMM handled it: for reads, `value` is what the VMM answered. */
export interface CompletedStep {
  step: ScriptStep;
  value?: bigint;
}

const segment = (selector: number, base: bigint, type: number): Segment => ({
  base,
  limit: 0xffff,
  selector,
  type,
  present: 1,
  dpl: 0,
  db: 0,
  s: 1,
  l: 0,
  g: 0,
  avl: 0,
  unusable: 0,
  padding: 0,
});

/** The architectural state after RESET (Intel SDM vol. 3, 9.1.1). */
function resetSregs(): Sregs {
  return {
    cs: segment(0xf000, 0xffff_0000n, 0xb),
    ds: segment(0, 0n, 3),
    es: segment(0, 0n, 3),
    fs: segment(0, 0n, 3),
    gs: segment(0, 0n, 3),
    ss: segment(0, 0n, 3),
    tr: { ...segment(0, 0n, 0xb), s: 0 },
    ldt: { ...segment(0, 0n, 2), s: 0 },
    gdt: { base: 0n, limit: 0xffff, padding: [0, 0, 0] },
    idt: { base: 0n, limit: 0xffff, padding: [0, 0, 0] },
    cr0: 0x6000_0010n,
    cr2: 0n,
    cr3: 0n,
    cr4: 0n,
    cr8: 0n,
    efer: 0n,
    apic_base: 0xfee0_0900n,
    interrupt_bitmap: [0n, 0n, 0n, 0n],
  };
}

function resetRegs(): Regs {
  return {
    rax: 0n,
    rbx: 0n,
    rcx: 0n,
    rdx: 0n,
    rsi: 0n,
    rdi: 0n,
    rsp: 0n,
    rbp: 0n,
    r8: 0n,
    r9: 0n,
    r10: 0n,
    r11: 0n,
    r12: 0n,
    r13: 0n,
    r14: 0n,
    r15: 0n,
    rip: 0xfff0n,
    rflags: 0x2n,
  };
}

/** x87/SSE state after FNINIT and with the MXCSR reset value, as KVM_SET_FPU takes it. */
function resetFpu(): Fpu {
  return {
    fpr: new Uint8Array(128),
    fcw: 0x37f,
    fsw: 0,
    ftwx: 0,
    pad1: 0,
    last_opcode: 0,
    last_ip: 0n,
    last_dp: 0n,
    xmm: new Uint8Array(256),
    mxcsr: 0x1f80,
    pad2: 0,
  };
}

const HLT: VcpuExit = Object.freeze({ kind: 'hlt' });
const INTR: VcpuExit = Object.freeze({ kind: 'intr' });

function littleEndian(value: number | bigint, size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let v = BigInt.asUintN(size * 8, BigInt(value));
  for (let i = 0; i < size; i++, v >>= 8n) bytes[i] = Number(v & 0xffn);
  return bytes;
}

function fromLittleEndian(bytes: Uint8Array): bigint {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
  return v;
}

export class MockVcpu implements VirtualCpu {
  regs = resetRegs();
  sregs = resetSregs();
  fpu: Fpu = resetFpu();
  readonly msrs = new Map<number, bigint>();
  cpuid: CpuidEntry[] = [];
  lapic = new Uint8Array(kvmLapicState.size);
  mpState = 0;
  immediateExit = false;
  closed = false;
  /** Steps already handed to the VMM, with the answers to reads. */
  readonly completed: CompletedStep[] = [];
  private readonly script: ScriptStep[] = [];
  private pending: { step: ScriptStep; data: Uint8Array } | undefined;

  constructor(
    readonly id: number,
    private readonly vm: MockVm,
  ) {}

  /** Appends guest actions; once they run out the guest halts. */
  push(...steps: ScriptStep[]): this {
    this.script.push(...steps);
    return this;
  }

  getRegs(): Regs {
    return { ...this.regs };
  }
  setRegs(regs: Regs): void {
    this.regs = { ...regs };
  }
  getSregs(): Sregs {
    return structuredClone(this.sregs);
  }
  setSregs(sregs: Sregs): void {
    this.sregs = structuredClone(sregs);
  }
  getFpu(): Fpu {
    return structuredClone(this.fpu);
  }
  setFpu(fpu: Partial<Fpu>): void {
    this.fpu = { ...resetFpu(), ...structuredClone(fpu) };
  }
  getCpuid2(): CpuidEntry[] {
    return this.cpuid.map((e) => ({ ...e }));
  }
  setCpuid2(entries: readonly CpuidEntry[]): void {
    this.cpuid = entries.map((e) => ({ ...e }));
  }
  getLapic(): Uint8Array {
    return this.lapic.slice();
  }
  getMpState(): number {
    return this.mpState;
  }
  setMpState(state: number): void {
    this.mpState = state;
  }
  setImmediateExit(on: boolean): void {
    this.immediateExit = on;
  }
  close(): void {
    this.closed = true;
  }

  setLapic(regs: Uint8Array): void {
    if (regs.length !== kvmLapicState.size) throw new RangeError(`a local APIC page is ${kvmLapicState.size} bytes, got ${regs.length}`);
    this.lapic = regs.slice();
  }

  getMsrs(indices: readonly number[]): MsrEntry[] {
    return indices.map((index) => ({ index, data: this.msrs.get(index) ?? 0n }));
  }

  setMsrs(entries: readonly MsrEntry[]): void {
    for (const { index, data } of entries) this.msrs.set(index, data);
  }

  run(): VcpuExit {
    this.completePending();
    if (this.immediateExit) return INTR;
    for (;;) {
      const step = this.script.shift();
      if (!step) return HLT;
      if ('exit' in step) {
        this.completed.push({ step });
        return step.exit;
      }
      const isWrite = 'io' in step ? step.io === 'out' : step.mmio === 'write';
      const data = isWrite ? littleEndian((step as { value: number | bigint }).value, step.size) : new Uint8Array(step.size);
      if (isWrite && this.vm.signalIoEvent('io' in step ? 'pio' : 'mmio', 'io' in step ? step.port : step.address, data)) {
        this.completed.push({ step });
        continue;
      }
      this.pending = { step, data };
      if ('io' in step) return { kind: 'io', direction: step.io, port: step.port, size: step.size, count: 1, data };
      return { kind: 'mmio', address: step.address, isWrite, data };
    }
  }

  /** Records the step the VMM just handled, with the value it answered to a read. */
  private completePending(): void {
    if (!this.pending) return;
    const { step, data } = this.pending;
    const isRead = 'io' in step ? step.io === 'in' : 'mmio' in step && step.mmio === 'read';
    this.completed.push(isRead ? { step, value: fromLittleEndian(data) } : { step });
    this.pending = undefined;
  }

  /** Reads the VMM answered, in order. */
  answers(): bigint[] {
    this.completePending();
    return this.completed.filter((c) => c.value !== undefined).map((c) => c.value!);
  }
}
