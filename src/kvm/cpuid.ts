// struct kvm_cpuid2 buffers: a header and `nent` entries, read and written without koffi's decoder.
import { decodeExact, encodeExact } from '../sys/abi.js';
import { kvmCpuid2, kvmCpuidEntry2 } from './structs.js';
import type { CpuidEntry } from './types.js';

/** Room KVM_GET_SUPPORTED_CPUID / KVM_GET_CPUID2 need on any current CPU (they fail with E2BIG otherwise). */
export const MAX_CPUID_ENTRIES = 256;

export function cpuidBuffer(entries: readonly CpuidEntry[] | number): Uint8Array {
  const n = typeof entries === 'number' ? entries : entries.length;
  const buf = new Uint8Array(kvmCpuid2.size + n * kvmCpuidEntry2.size);
  new DataView(buf.buffer).setUint32(0, n, true);
  if (typeof entries !== 'number') {
    for (const [i, e] of entries.entries()) encodeExact(kvmCpuidEntry2, e, buf.subarray(kvmCpuid2.size + i * kvmCpuidEntry2.size));
  }
  return buf;
}

export function readCpuidEntries(buf: Uint8Array): CpuidEntry[] {
  const n = new DataView(buf.buffer, buf.byteOffset).getUint32(0, true);
  if (kvmCpuid2.size + n * kvmCpuidEntry2.size > buf.length) throw new RangeError(`kvm_cpuid2 claims ${n} entries beyond its buffer`);
  return Array.from({ length: n }, (_, i) => {
    const at = kvmCpuid2.size + i * kvmCpuidEntry2.size;
    const { function: fn, index, flags, eax, ebx, ecx, edx } = decodeExact<CpuidEntry>(kvmCpuidEntry2, buf.subarray(at, at + kvmCpuidEntry2.size));
    return { function: fn, index, flags, eax, ebx, ecx, edx };
  });
}
