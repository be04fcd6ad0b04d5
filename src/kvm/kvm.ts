// /dev/kvm: the system-level handle. Checks the API version once and answers capability, CPUID and
// MSR questions that do not need a VM.
import { constants } from 'node:os';
import { KVM_API_VERSION } from './constants.js';
import {
  KVM_CHECK_EXTENSION,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  KVM_GET_MSR_FEATURE_INDEX_LIST,
  KVM_GET_MSR_INDEX_LIST,
  KVM_GET_SUPPORTED_CPUID,
  KVM_GET_VCPU_MMAP_SIZE,
} from './ioctls.js';
import { MAX_CPUID_ENTRIES, cpuidBuffer, readCpuidEntries } from './cpuid.js';
import { kvmMsrList } from './structs.js';
import type { CpuidEntry } from './types.js';
import { O_RDWR, SysError, close, ioctlBuffer, ioctlRaw, ioctlValue, open } from '../sys/sys.js';
import { Vm } from './vm.js';
const { EINTR, EINVAL } = constants.errno;

const OPEN_HINTS = {
  ENOENT: 'no /dev/kvm: load kvm-intel or kvm-amd, or enable nested virtualization for this VM',
  EACCES: 'no permission on /dev/kvm: add the user to the "kvm" group (or run as root)',
  EPERM: 'no permission on /dev/kvm: add the user to the "kvm" group (or run as root)',
};

const MAX_MSR_INDICES = 1024;

export class Kvm {
  private constructor(
    readonly fd: number,
    readonly vcpuMmapSize: number,
  ) {}

  static open(path = '/dev/kvm'): Kvm {
    const fd = open(path, O_RDWR, OPEN_HINTS);
    try {
      const version = ioctlValue(fd, 'KVM_GET_API_VERSION', KVM_GET_API_VERSION);
      if (version !== KVM_API_VERSION) {
        throw new Error(`${path} speaks KVM API version ${version}; ts-vmm needs ${KVM_API_VERSION}`);
      }
      return new Kvm(fd, ioctlValue(fd, 'KVM_GET_VCPU_MMAP_SIZE', KVM_GET_VCPU_MMAP_SIZE));
    } catch (e) {
      close(fd);
      throw e;
    }
  }

  /** 0 when unsupported; otherwise 1 or a capability-specific number (e.g. KVM_CAP_MAX_VCPUS). */
  checkExtension(capability: number): number {
    return ioctlValue(this.fd, 'KVM_CHECK_EXTENSION', KVM_CHECK_EXTENSION, capability);
  }

  createVm(machineType = 0): Vm {
    // A signal that arrives while KVM sets the VM up (a terminal's SIGWINCH, a profiler's SIGPROF, a child's
    // SIGCHLD) fails the call with EINTR; nothing was made, so it is made again, as QEMU does.
    let fd: number;
    do fd = ioctlRaw(this.fd, KVM_CREATE_VM, machineType);
    while (fd === -EINTR);
    if (fd < 0)
      throw new SysError('KVM_CREATE_VM', -fd, fd === -EINVAL ? 'KVM refused the machine type (or the host lacks virtualization support)' : undefined);
    return new Vm(fd, this.vcpuMmapSize);
  }

  /** The CPUID leaves KVM can virtualize on this host, ready to filter and hand to setCpuid2(). */
  getSupportedCpuid(): CpuidEntry[] {
    const buf = cpuidBuffer(MAX_CPUID_ENTRIES);
    ioctlBuffer(this.fd, 'KVM_GET_SUPPORTED_CPUID', KVM_GET_SUPPORTED_CPUID, buf);
    return readCpuidEntries(buf);
  }

  /** MSRs KVM saves and restores for a guest (KVM_GET_MSR_INDEX_LIST). */
  getMsrIndexList(): number[] {
    return this.msrList('KVM_GET_MSR_INDEX_LIST', KVM_GET_MSR_INDEX_LIST);
  }

  /** Feature MSRs (e.g. IA32_ARCH_CAPABILITIES) readable with KVM_GET_MSRS on /dev/kvm. */
  getMsrFeatureIndexList(): number[] {
    return this.msrList('KVM_GET_MSR_FEATURE_INDEX_LIST', KVM_GET_MSR_FEATURE_INDEX_LIST);
  }

  private msrList(name: string, request: number): number[] {
    const buf = new Uint8Array(kvmMsrList.size + 4 * MAX_MSR_INDICES);
    const view = new DataView(buf.buffer);
    view.setUint32(0, MAX_MSR_INDICES, true);
    const r = ioctlRaw(this.fd, request, buf);
    if (r < 0) throw new SysError(name, -r, -r === constants.errno.E2BIG ? `more than ${MAX_MSR_INDICES} MSRs` : undefined);
    const n = view.getUint32(0, true);
    return Array.from({ length: n }, (_, i) => view.getUint32(kvmMsrList.size + 4 * i, true));
  }

  close(): void {
    close(this.fd);
  }
}
