// Decides whether KVM can be used on this host directly or only inside the lab. Unlike Kvm.open it
// reports why not instead of throwing, and keeps no descriptor open.
import { KVM_API_VERSION } from '../kvm/constants.js';
import { KVM_GET_API_VERSION } from '../kvm/ioctls.js';
import { O_RDWR, SysError, close, ioctlValue, open } from '../kvm/sys.js';

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
 * Whether KVM work must go to the lab: when this host has no usable KVM, or when TS_VMM_LAB=force
 * asks for the lab path anyway (to exercise what a CI machine without /dev/kvm does). Never inside
 * the lab itself, which has KVM.
 */
export function labNeeded(): boolean {
  if (process.env.TS_VMM_IN_LAB === '1') return false;
  return process.env.TS_VMM_LAB === 'force' || !kvmAvailable();
}
