// Decides whether KVM can be used on this host directly or only inside the lab. Unlike Kvm.open it
// reports why not instead of throwing, and keeps no descriptor open.
import { existsSync } from 'node:fs';
import { KVM_API_VERSION } from './constants.js';
import { KVM_GET_API_VERSION } from './ioctls.js';
import { O_RDWR, SysError, close, ioctlValue, open } from '../sys/sys.js';

export interface KvmProbe {
  readonly available: boolean;
  /** Why not, in words (`open /dev/kvm failed: ENOENT — ...`), when unavailable. */
  readonly reason?: string;
  readonly apiVersion?: number;
}

export function probeKvm(device = '/dev/kvm'): KvmProbe {
  let fd: number;
  try {
    fd = open(device, O_RDWR);
  } catch (e) {
    if (e instanceof SysError) return { available: false, reason: e.message };
    throw e;
  }
  try {
    const apiVersion = ioctlValue(fd, 'KVM_GET_API_VERSION', KVM_GET_API_VERSION);
    return apiVersion === KVM_API_VERSION
      ? { available: true, apiVersion }
      : { available: false, apiVersion, reason: `${device} reports KVM API version ${apiVersion}, expected ${KVM_API_VERSION}` };
  } catch (e) {
    if (e instanceof SysError) return { available: false, reason: e.message };
    throw e;
  } finally {
    close(fd);
  }
}

/** True when /dev/kvm opens read-write and speaks KVM API version 12. */
export function kvmAvailable(): boolean {
  return probeKvm().available;
}

/**
 * Why KVM work (booting the stock kernel, the @kvm tests) cannot run on this host's /dev/kvm, or
 * undefined when it can. Besides a missing or unusable /dev/kvm: a PVM host (kvm_pvm) runs guests
 * in ring 3 without hardware virtualization and boots only PVM guest kernels, not the stock one;
 * and TS_VMM_LAB=force asks for the lab path anyway (what a CI machine without /dev/kvm does).
 * Never inside the lab itself, which has KVM.
 */
export function kvmUnsuitableReason(): string | undefined {
  if (process.env.TS_VMM_IN_LAB === '1') return undefined;
  if (process.env.TS_VMM_LAB === 'force') return 'TS_VMM_LAB=force';
  const kvm = probeKvm();
  if (!kvm.available) return `no usable KVM here (${kvm.reason})`;
  if (existsSync('/sys/module/kvm_pvm')) return "this host's KVM is PVM (kvm_pvm), which boots only PVM guest kernels, not the stock one";
  return undefined;
}

/** Whether KVM work must go to the lab. */
export function labNeeded(): boolean {
  return kvmUnsuitableReason() !== undefined;
}
