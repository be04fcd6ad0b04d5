// The CPUID a vCPU sees: what KVM_GET_SUPPORTED_CPUID offers, normalised per vCPU the way Firecracker
// does it, so the guest's topology enumeration (APIC ids, core counts, cache sharing) matches the MADT
// and the guest knows it runs under a hypervisor.
import type { CpuidEntry } from '../kvm/types.js';

export interface CpuTopology {
  /** This vCPU's index, which is also its APIC id. */
  vcpu: number;
  vcpus: number;
  /** Keep the SEV leaf (0x8000001f) as KVM offers it; otherwise hide memory encryption from the guest. */
  memoryEncryption: boolean;
  /**
   * The in-kernel LAPIC emulates the TSC-deadline timer (KVM_CAP_TSC_DEADLINE_TIMER). KVM leaves the
   * CPUID bit to userspace; with it the guest skips its LAPIC timer calibration and arms timers with
   * one MSR write.
   */
  tscDeadlineTimer: boolean;
}

const LEAF1_ECX_TSC_DEADLINE = 1 << 24;
const LEAF1_ECX_HYPERVISOR = 1 << 31;
const LEAF1_EDX_HTT = 1 << 28;
const EXT1_ECX_CMP_LEGACY = 1 << 1;
const EXT1_ECX_TOPOEXT = 1 << 22;
/** CLFLUSH line size in 8-byte units (64 bytes), leaf 1 EBX[15:8]. */
const CLFLUSH_LINE = 8;

const TOPOLOGY_LEVEL_SMT = 1;
const TOPOLOGY_LEVEL_CORE = 2;

/** Bits needed to number `n` things: the APIC-id shift for a level of that many. */
const bitsFor = (n: number): number => (n <= 1 ? 0 : Math.ceil(Math.log2(n)));

/**
 * One socket of `vcpus` single-threaded cores, each vCPU's APIC id equal to its index. Returns new
 * entries; `supported` is not modified.
 */
export function normaliseCpuid(supported: readonly CpuidEntry[], topology: CpuTopology): CpuidEntry[] {
  const { vcpu, vcpus } = topology;
  if (!Number.isInteger(vcpu) || vcpu < 0 || vcpu >= vcpus || vcpus > 255) throw new RangeError(`vCPU ${vcpu} of ${vcpus}: APIC ids must fit 8 bits`);
  const out: CpuidEntry[] = [];
  for (const original of supported) {
    const e = { ...original };
    switch (e.function) {
      case 0x1:
        e.ebx = ((vcpu << 24) | (vcpus << 16) | (CLFLUSH_LINE << 8) | (e.ebx & 0xff)) >>> 0;
        e.ecx = (e.ecx | LEAF1_ECX_HYPERVISOR) >>> 0;
        if (topology.tscDeadlineTimer) e.ecx = (e.ecx | LEAF1_ECX_TSC_DEADLINE) >>> 0;
        e.edx = vcpus > 1 ? (e.edx | LEAF1_EDX_HTT) >>> 0 : (e.edx & ~LEAF1_EDX_HTT) >>> 0;
        break;
      case 0x4: {
        // Deterministic cache parameters (Intel): cores per package and threads sharing each cache.
        const level = (e.eax >> 5) & 0x7;
        const sharing = level >= 3 ? vcpus - 1 : 0;
        e.eax = ((e.eax & 0x3fff) | (sharing << 14) | ((vcpus - 1) << 26)) >>> 0;
        break;
      }
      case 0xb:
      case 0x1f:
        Object.assign(e, extendedTopology(e.index, vcpu, vcpus));
        break;
      case 0x8000_0001:
        e.ecx = vcpus > 1 ? (e.ecx | EXT1_ECX_CMP_LEGACY) >>> 0 : (e.ecx & ~EXT1_ECX_CMP_LEGACY) >>> 0;
        e.ecx = (e.ecx | EXT1_ECX_TOPOEXT) >>> 0;
        break;
      case 0x8000_0008:
        // AMD: ApicIdSize in ECX[15:12], number of cores minus one in ECX[7:0].
        e.ecx = ((e.ecx & ~0xf0ff) | (bitsFor(vcpus) << 12) | (vcpus - 1)) >>> 0;
        break;
      case 0x8000_001d: {
        // AMD cache topology: NumSharingCache (minus one) in EAX[25:14]; only the L3 is shared.
        const level = (e.eax >> 5) & 0x7;
        e.eax = ((e.eax & ~(0xfff << 14)) | ((level >= 3 ? vcpus - 1 : 0) << 14)) >>> 0;
        break;
      }
      case 0x8000_001e:
        // AMD extended APIC id; core id; one thread per core; one node.
        e.eax = vcpu;
        e.ebx = vcpu & 0xff;
        e.ecx = 0;
        e.edx = 0;
        break;
      case 0x8000_001f:
        if (!topology.memoryEncryption) Object.assign(e, { eax: 0, ebx: 0, ecx: 0, edx: 0 });
        break;
      default:
        break;
    }
    out.push(e);
  }
  return out;
}

function extendedTopology(index: number, vcpu: number, vcpus: number): Pick<CpuidEntry, 'eax' | 'ebx' | 'ecx' | 'edx'> {
  if (index === 0) return { eax: 0, ebx: 1, ecx: (TOPOLOGY_LEVEL_SMT << 8) | index, edx: vcpu };
  if (index === 1) return { eax: bitsFor(vcpus), ebx: vcpus, ecx: (TOPOLOGY_LEVEL_CORE << 8) | index, edx: vcpu };
  // No further levels: an invalid level type ends the enumeration.
  return { eax: 0, ebx: 0, ecx: index, edx: vcpu };
}
