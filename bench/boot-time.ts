// Time from process start to the guest's first line from init, and the VMM's resident memory beyond
// guest RAM, for `ts-vmm boot` and for QEMU's microvm (`-M microvm,acpi=on -accel kvm`) booting the
// same stock Debian kernel and initramfs in the same run. Needs a host whose KVM runs guests natively:
// run it in the lab (docs/BOOT.md gives the command).
//
// A second ts-vmm build (its bin/ts-vmm.js) can be timed in the same run, interleaved: the A/B for a change
// that must not move the boot (tracing compiled in but off, against the commit before it).
//
//   node dist/bench/boot-time.js [runs] [other-build/bin/ts-vmm.js] [vCPUs=1]
import { guestAssets } from '../test/vmm/guest-fixtures.js';
import { BOOT_MARKER, bootSample, qemuBoot, tsVmmBoot, type BootSample, type BootShape } from './boot-sample.js';
import { median } from './measure.js';

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 5);
  const otherCli = process.argv[3] || undefined;
  const cpus = Number(process.argv[4] ?? 1);
  const guest = await guestAssets();
  const shape: BootShape = { kernel: guest.kernel, initrd: await guest.initrd('bench', `echo ${BOOT_MARKER}\npoweroff -f`), cpus, memoryMiB: 512 };
  const results = { tsVmm: [] as BootSample[], qemu: [] as BootSample[], other: [] as BootSample[] };
  // Interleaved, so drift in the host (page cache, frequency) hits both alike.
  for (let i = 0; i < runs; i++) {
    results.tsVmm.push(await bootSample(tsVmmBoot(shape)));
    results.qemu.push(await bootSample(qemuBoot(shape)));
    if (otherCli !== undefined) results.other.push(await bootSample(tsVmmBoot(shape, otherCli)));
  }
  const row = (name: string, s: BootSample[]) =>
    `${name.padEnd(22)} ${median(s.map((x) => x.firstLineMs))
      .toFixed(0)
      .padStart(8)} ms   ${median(s.map((x) => x.overheadKiB))
      .toString()
      .padStart(8)} KiB`;
  process.stdout.write(`boot to init's first line (median of ${runs}, ${cpus} vCPU), VMM resident memory beyond guest RAM\n`);
  process.stdout.write(`${row('ts-vmm boot', results.tsVmm)}\n${row('qemu -M microvm', results.qemu)}\n`);
  const ratio = median(results.tsVmm.map((x) => x.firstLineMs)) / median(results.qemu.map((x) => x.firstLineMs));
  process.stdout.write(`ratio ts-vmm / qemu: ${ratio.toFixed(2)} (target <= 1.00)\n`);
  if (otherCli !== undefined) {
    process.stdout.write(`${row('other build', results.other)}  (${otherCli})\n`);
    const againstOther = median(results.tsVmm.map((x) => x.firstLineMs)) / median(results.other.map((x) => x.firstLineMs));
    process.stdout.write(`ratio ts-vmm / other build: ${againstOther.toFixed(3)}\n`);
  }
  await guest.dispose();
}

await main();
