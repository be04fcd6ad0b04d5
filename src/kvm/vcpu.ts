// A KVM vCPU: register state and KVM_RUN. The exit is decoded from the mmap'ed struct kvm_run with a
// DataView at offsets resolved once from the declared layout, so the hot path calls koffi only for the
// ioctl itself.
import { constants } from 'node:os';
import { decodeExact, encodeExact, offsetOf } from '../sys/abi.js';
import {
  KVM_EXIT_EXCEPTION,
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_SYSTEM_EVENT,
} from './constants.js';
import {
  KVM_GET_CPUID2,
  KVM_GET_FPU,
  KVM_GET_LAPIC,
  KVM_GET_MP_STATE,
  KVM_GET_MSRS,
  KVM_GET_REGS,
  KVM_GET_SREGS,
  KVM_RUN,
  KVM_SET_CPUID2,
  KVM_SET_FPU,
  KVM_SET_LAPIC,
  KVM_SET_MP_STATE,
  KVM_SET_MSRS,
  KVM_SET_REGS,
  KVM_SET_SREGS,
} from './ioctls.js';
import { MAX_CPUID_ENTRIES, cpuidBuffer, readCpuidEntries } from './cpuid.js';
import { kvmFpu, kvmLapicState, kvmMpState, kvmMsrEntry, kvmMsrs, kvmRegs, kvmRun, kvmSregs } from './structs.js';
import { MAP_SHARED, PROT_READ, PROT_WRITE, SysError, close, ioctlBuffer, ioctlRaw, mmap, munmap, viewAt, type Mapping } from '../sys/sys.js';
import type { CpuidEntry, Fpu, MsrEntry, Regs, Sregs, VcpuExit, VirtualCpu } from './types.js';

const { EINTR, EAGAIN } = constants.errno;

/** Offsets into struct kvm_run, resolved once. */
const RUN = {
  immediateExit: offsetOf(kvmRun, 'immediate_exit'),
  exitReason: offsetOf(kvmRun, 'exit_reason'),
  hwReason: offsetOf(kvmRun, 'hw.hardware_exit_reason'),
  failReason: offsetOf(kvmRun, 'fail_entry.hardware_entry_failure_reason'),
  failCpu: offsetOf(kvmRun, 'fail_entry.cpu'),
  exException: offsetOf(kvmRun, 'ex.exception'),
  exErrorCode: offsetOf(kvmRun, 'ex.error_code'),
  ioDirection: offsetOf(kvmRun, 'io.direction'),
  ioSize: offsetOf(kvmRun, 'io.size'),
  ioPort: offsetOf(kvmRun, 'io.port'),
  ioCount: offsetOf(kvmRun, 'io.count'),
  ioDataOffset: offsetOf(kvmRun, 'io.data_offset'),
  mmioAddress: offsetOf(kvmRun, 'mmio.phys_addr'),
  mmioData: offsetOf(kvmRun, 'mmio.data'),
  mmioLength: offsetOf(kvmRun, 'mmio.len'),
  mmioIsWrite: offsetOf(kvmRun, 'mmio.is_write'),
  internalSuberror: offsetOf(kvmRun, 'internal.suberror'),
  internalNdata: offsetOf(kvmRun, 'internal.ndata'),
  internalData: offsetOf(kvmRun, 'internal.data'),
  eventType: offsetOf(kvmRun, 'system_event.type'),
  eventNdata: offsetOf(kvmRun, 'system_event.ndata'),
  eventData: offsetOf(kvmRun, 'system_event.data'),
};
const MAX_EXIT_DATA = 16;

const INTR: VcpuExit = Object.freeze({ kind: 'intr' });
const HLT: VcpuExit = Object.freeze({ kind: 'hlt' });
const SHUTDOWN: VcpuExit = Object.freeze({ kind: 'shutdown' });
const IRQ_WINDOW_OPEN: VcpuExit = Object.freeze({ kind: 'irq-window-open' });

/** What a worker thread needs to drive a vCPU created (and owned) by the main thread. */
export interface VcpuDescriptor {
  id: number;
  fd: number;
  runAddress: bigint;
  runSize: number;
}

export class Vcpu implements VirtualCpu {
  private readonly run8: Uint8Array;
  private readonly runView: DataView;
  private readonly regsBuf = new Uint8Array(kvmRegs.size);
  private readonly sregsBuf = new Uint8Array(kvmSregs.size);

  private constructor(
    readonly id: number,
    readonly fd: number,
    private readonly runMapping: Mapping,
    private readonly ownsMapping: boolean,
  ) {
    this.run8 = runMapping.bytes;
    this.runView = new DataView(this.run8.buffer, this.run8.byteOffset, this.run8.byteLength);
  }

  static fromFd(id: number, fd: number, mmapSize: number): Vcpu {
    if (mmapSize < kvmRun.size) throw new Error(`KVM_GET_VCPU_MMAP_SIZE ${mmapSize} is smaller than struct kvm_run (${kvmRun.size})`);
    const mapping = mmap(mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, 'mmap kvm_run');
    return new Vcpu(id, fd, mapping, true);
  }

  /** The same vCPU in another thread: fd and kvm_run mapping are shared by the whole process. */
  static fromDescriptor({ id, fd, runAddress, runSize }: VcpuDescriptor): Vcpu {
    return new Vcpu(id, fd, { address: runAddress, length: runSize, bytes: viewAt(runAddress, runSize) }, false);
  }

  descriptor(): VcpuDescriptor {
    return { id: this.id, fd: this.fd, runAddress: this.runMapping.address, runSize: this.runMapping.length };
  }

  getRegs(): Regs {
    ioctlBuffer(this.fd, 'KVM_GET_REGS', KVM_GET_REGS, this.regsBuf);
    return decodeExact<Regs>(kvmRegs, this.regsBuf);
  }

  setRegs(regs: Regs): void {
    ioctlBuffer(this.fd, 'KVM_SET_REGS', KVM_SET_REGS, encodeExact(kvmRegs, regs, this.regsBuf));
  }

  getSregs(): Sregs {
    ioctlBuffer(this.fd, 'KVM_GET_SREGS', KVM_GET_SREGS, this.sregsBuf);
    return decodeExact<Sregs>(kvmSregs, this.sregsBuf);
  }

  setSregs(sregs: Sregs): void {
    ioctlBuffer(this.fd, 'KVM_SET_SREGS', KVM_SET_SREGS, encodeExact(kvmSregs, sregs, this.sregsBuf), {
      EINVAL: 'KVM rejected the segment/control register state (check CR0/CR4/EFER consistency)',
    });
  }

  getFpu(): Fpu {
    const buf = new Uint8Array(kvmFpu.size);
    ioctlBuffer(this.fd, 'KVM_GET_FPU', KVM_GET_FPU, buf);
    return decodeExact<Fpu>(kvmFpu, buf);
  }

  setFpu(fpu: Partial<Fpu>): void {
    ioctlBuffer(this.fd, 'KVM_SET_FPU', KVM_SET_FPU, encodeExact(kvmFpu, fpu));
  }

  getMsrs(indices: readonly number[]): MsrEntry[] {
    const buf = msrBuffer(indices.map((index) => ({ index, data: 0n })));
    const n = ioctlBuffer(this.fd, 'KVM_GET_MSRS', KVM_GET_MSRS, buf);
    if (n < indices.length) throw new Error(`KVM_GET_MSRS: MSR 0x${indices[n]!.toString(16)} is not supported`);
    const view = new DataView(buf.buffer);
    return indices.map((index, i) => ({ index, data: view.getBigUint64(kvmMsrs.size + i * kvmMsrEntry.size + offsetOf(kvmMsrEntry, 'data'), true) }));
  }

  setMsrs(entries: readonly MsrEntry[]): void {
    const n = ioctlBuffer(this.fd, 'KVM_SET_MSRS', KVM_SET_MSRS, msrBuffer(entries));
    if (n < entries.length) {
      const e = entries[n]!;
      throw new Error(`KVM_SET_MSRS: MSR 0x${e.index.toString(16)} rejected value 0x${e.data.toString(16)}`);
    }
  }

  getCpuid2(): CpuidEntry[] {
    const buf = cpuidBuffer(MAX_CPUID_ENTRIES);
    ioctlBuffer(this.fd, 'KVM_GET_CPUID2', KVM_GET_CPUID2, buf);
    const entries = readCpuidEntries(buf);
    if (entries.length < MAX_CPUID_ENTRIES) return entries;
    // nent came back unchanged: some kernels (6.1 among them) never copy the updated count out. The count is
    // the smallest nent that does not fail with E2BIG; find it by bisection.
    let low = 0;
    let high = MAX_CPUID_ENTRIES;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (ioctlRaw(this.fd, KVM_GET_CPUID2, cpuidBuffer(mid)) === -constants.errno.E2BIG) low = mid + 1;
      else high = mid;
    }
    return entries.slice(0, low);
  }

  setCpuid2(entries: readonly CpuidEntry[]): void {
    ioctlBuffer(this.fd, 'KVM_SET_CPUID2', KVM_SET_CPUID2, cpuidBuffer(entries), { E2BIG: `${entries.length} CPUID entries are too many` });
  }

  getLapic(): Uint8Array {
    const buf = new Uint8Array(kvmLapicState.size);
    ioctlBuffer(this.fd, 'KVM_GET_LAPIC', KVM_GET_LAPIC, buf, { ENXIO: 'no in-kernel local APIC (createIrqchip first)' });
    return buf;
  }

  setLapic(regs: Uint8Array): void {
    if (regs.length !== kvmLapicState.size) throw new RangeError(`a local APIC page is ${kvmLapicState.size} bytes, got ${regs.length}`);
    ioctlBuffer(this.fd, 'KVM_SET_LAPIC', KVM_SET_LAPIC, regs, { ENXIO: 'no in-kernel local APIC (createIrqchip first)' });
  }

  getMpState(): number {
    const buf = new Uint8Array(kvmMpState.size);
    ioctlBuffer(this.fd, 'KVM_GET_MP_STATE', KVM_GET_MP_STATE, buf);
    return new DataView(buf.buffer).getUint32(0, true);
  }

  setMpState(state: number): void {
    ioctlBuffer(this.fd, 'KVM_SET_MP_STATE', KVM_SET_MP_STATE, encodeExact(kvmMpState, { mp_state: state }));
  }

  setImmediateExit(on: boolean): void {
    this.run8[RUN.immediateExit] = on ? 1 : 0;
  }

  run(): VcpuExit {
    const r = ioctlRaw(this.fd, KVM_RUN, 0);
    if (r < 0) {
      if (-r === EINTR || -r === EAGAIN) return INTR;
      throw new SysError('KVM_RUN', -r);
    }
    return this.decodeExit();
  }

  private decodeExit(): VcpuExit {
    const v = this.runView;
    const reason = v.getUint32(RUN.exitReason, true);
    switch (reason) {
      case KVM_EXIT_IO: {
        const size = v.getUint8(RUN.ioSize);
        const count = v.getUint32(RUN.ioCount, true);
        const start = u64(v, RUN.ioDataOffset);
        const end = start + size * count;
        if (end > this.run8.length) throw new Error(`KVM_EXIT_IO data 0x${start.toString(16)}+${size}x${count} lies outside kvm_run`);
        return {
          kind: 'io',
          direction: v.getUint8(RUN.ioDirection) === KVM_EXIT_IO_OUT ? 'out' : 'in',
          port: v.getUint16(RUN.ioPort, true),
          size,
          count,
          data: this.run8.subarray(start, end),
        };
      }
      case KVM_EXIT_MMIO: {
        const length = Math.min(v.getUint32(RUN.mmioLength, true), 8);
        return {
          kind: 'mmio',
          address: u64(v, RUN.mmioAddress),
          isWrite: v.getUint8(RUN.mmioIsWrite) !== 0,
          data: this.run8.subarray(RUN.mmioData, RUN.mmioData + length),
        };
      }
      case KVM_EXIT_HLT:
        return HLT;
      case KVM_EXIT_SHUTDOWN:
        return SHUTDOWN;
      case KVM_EXIT_INTR:
        return INTR;
      case KVM_EXIT_IRQ_WINDOW_OPEN:
        return IRQ_WINDOW_OPEN;
      case KVM_EXIT_FAIL_ENTRY:
        return { kind: 'fail-entry', hardwareReason: v.getBigUint64(RUN.failReason, true), cpu: v.getUint32(RUN.failCpu, true) };
      case KVM_EXIT_INTERNAL_ERROR:
        return {
          kind: 'internal-error',
          suberror: v.getUint32(RUN.internalSuberror, true),
          data: u64s(v, RUN.internalData, v.getUint32(RUN.internalNdata, true)),
        };
      case KVM_EXIT_SYSTEM_EVENT:
        return { kind: 'system-event', type: v.getUint32(RUN.eventType, true), data: u64s(v, RUN.eventData, v.getUint32(RUN.eventNdata, true)) };
      case KVM_EXIT_EXCEPTION:
        return { kind: 'exception', exception: v.getUint32(RUN.exException, true), errorCode: v.getUint32(RUN.exErrorCode, true) };
      default:
        return { kind: 'unknown', reason, hardwareReason: v.getBigUint64(RUN.hwReason, true) };
    }
  }

  /** Unmaps kvm_run and closes the fd; only the thread that created the vCPU does this. */
  close(): void {
    if (!this.ownsMapping) return;
    munmap(this.runMapping);
    close(this.fd);
  }
}

/** A u64 the kernel wrote that, for addresses, fits a JS number (guest-physical space is < 2^52). */
function u64(v: DataView, offset: number): number {
  return v.getUint32(offset, true) + v.getUint32(offset + 4, true) * 0x1_0000_0000;
}

function u64s(v: DataView, offset: number, n: number): bigint[] {
  return Array.from({ length: Math.min(n, MAX_EXIT_DATA) }, (_, i) => v.getBigUint64(offset + 8 * i, true));
}

function msrBuffer(entries: readonly MsrEntry[]): Uint8Array {
  const buf = new Uint8Array(kvmMsrs.size + entries.length * kvmMsrEntry.size);
  new DataView(buf.buffer).setUint32(0, entries.length, true);
  for (const [i, e] of entries.entries()) encodeExact(kvmMsrEntry, { index: e.index, data: e.data }, buf.subarray(kvmMsrs.size + i * kvmMsrEntry.size));
  return buf;
}
