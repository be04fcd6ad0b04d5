// The launch digest of a QEMU/OVMF SEV launch as `sevctl measurement build` predicts it: the OVMF image,
// then (with -kernel) QEMU's kernel-hashes table of SHA-256 of the command line (with its NUL), initrd and
// kernel, then for SEV-ES the VMSA of every vCPU (the boot CPU's, then the same one for each other vCPU).
import { createHash } from 'node:crypto';
import { buildGuidTable } from './guid-table.js';

export const KERNEL_HASHES_TABLE_GUID = '9438d606-4f22-4cc9-b479-a793d411fd21';
export const KERNEL_HASH_GUID = '4de79437-abd2-427f-b835-d5b172d2045b';
export const INITRD_HASH_GUID = '44baf731-3a2f-4bd7-9af1-41e29169781d';
export const CMDLINE_HASH_GUID = '97d02dd8-bd20-4c94-aa78-e7714d36ab2a';

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest();

export function kernelHashesTable(kernel: Uint8Array, initrd: Uint8Array, cmdline: string): Buffer {
  return buildGuidTable(
    KERNEL_HASHES_TABLE_GUID,
    [
      { guid: CMDLINE_HASH_GUID, data: sha256(Buffer.concat([Buffer.from(cmdline, 'utf8'), Buffer.of(0)])) },
      { guid: INITRD_HASH_GUID, data: sha256(initrd) },
      { guid: KERNEL_HASH_GUID, data: sha256(kernel) },
    ],
    2,
  );
}

export interface OvmfLaunch {
  firmware: Uint8Array;
  /** Direct kernel boot: all three or none. */
  kernel?: { kernel: Uint8Array; initrd: Uint8Array; cmdline: string };
  /** SEV-ES: vCPU count and the VMSA pages of the boot CPU and of the others. */
  es?: { vcpus: number; bootVmsa: Uint8Array; apVmsa: Uint8Array };
}

export function ovmfLaunchDigest(launch: OvmfLaunch): Buffer {
  const hash = createHash('sha256').update(launch.firmware);
  if (launch.kernel) hash.update(kernelHashesTable(launch.kernel.kernel, launch.kernel.initrd, launch.kernel.cmdline));
  if (launch.es) {
    if (!Number.isInteger(launch.es.vcpus) || launch.es.vcpus < 1) throw new RangeError('SEV-ES needs at least one vCPU');
    hash.update(launch.es.bootVmsa);
    for (let i = 1; i < launch.es.vcpus; i++) hash.update(launch.es.apVmsa);
  }
  return hash.digest();
}
