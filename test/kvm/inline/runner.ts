// Picks how to run a VM's vCPUs: real KVM vCPUs get a thread each; any other VirtualCpu (the mock)
// runs inline on the main thread.
import { InlineVcpuRunner } from './inline-runner.js';
import type { IoBuses, VcpuRunner, VirtualCpu } from '../../../src/kvm/types.js';
import { Vcpu } from '../../../src/kvm/vcpu.js';
import { VcpuThreads, type VcpuThreadsOptions } from '../../../src/kvm/vcpu-threads.js';

export function createVcpuRunner(vcpus: readonly VirtualCpu[], buses: IoBuses, options: VcpuThreadsOptions = {}): VcpuRunner {
  const real = vcpus.filter((v): v is Vcpu => v instanceof Vcpu);
  if (real.length === vcpus.length) return new VcpuThreads(real, buses, options);
  if (real.length > 0) throw new Error('cannot run real and mocked vCPUs in one VM');
  if (options.localRanges?.length) throw new Error('vCPU-local ranges need real vCPU threads');
  return new InlineVcpuRunner(vcpus, buses);
}
