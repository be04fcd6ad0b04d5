// Whether this host can boot the stock kernel on its own /dev/kvm, or a run has to go to the lab.
import { existsSync } from 'node:fs';
import { probeKvm } from '../lab/kvm-probe.js';

/**
 * Why runs cannot use this host's KVM, or undefined when they can. Besides a missing or unusable /dev/kvm, a
 * PVM host (kvm_pvm: KVM that runs guests in ring 3 without hardware virtualization) only boots kernels built
 * as PVM guests, which Debian's stock kernel is not.
 */
export function kvmUnsuitableReason(): string | undefined {
  if (process.env.TS_VMM_IN_LAB === '1') return undefined;
  if (process.env.TS_VMM_LAB === 'force') return 'TS_VMM_LAB=force';
  const kvm = probeKvm();
  if (!kvm.available) return `no usable KVM here (${kvm.reason})`;
  if (existsSync('/sys/module/kvm_pvm')) return 'this host\'s KVM is PVM (kvm_pvm), which boots only PVM guest kernels, not the stock one';
  return undefined;
}
