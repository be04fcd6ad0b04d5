// How boot time and VMM memory grow, `ts-vmm boot` against QEMU microvm booting the same stock kernel and
// initramfs: over vCPUs (1, 2, 4, 8 at 512 MiB), over guest RAM (256 MiB to 4 GiB at one vCPU), and with ten VMs
// started at once (one vCPU, 256 MiB each: the time until all ten have printed init's first line, and their
// memory beyond guest RAM added up); then, per point, where the VMM process's CPU time went until that line. Boot
// time and memory are measured as bench/boot-time.ts does. Medians of RUNS interleaved runs per point; the
// ten-at-once point is run once per VMM. Needs a host whose KVM runs guests natively; in the lab give it room for
// the guests: `ts-vmm lab --memory 8192 ...` (docs/PERFORMANCE.md).
//   npm run build && node dist/bench/scaling.js [RUNS=3] [vCPU counts: 1,2,4,8] [guest RAM MiB: 256,1024,2048,4096]
//     [ten|-]   (a list may be '-' for none, so that one point can be measured again alone)
import { guestAssets } from '../test/vmm/guest-fixtures.js';
import { BOOT_MARKER, bootSample, qemuBoot, tsVmmBoot, type BootSample, type BootShape, type VmmCommand } from './boot-sample.js';
import { median } from './measure.js';

const runs = Number(process.argv[2] ?? 3);
const list = (arg: string | undefined, all: string): number[] => ((arg ?? all) === '-' ? [] : (arg ?? all).split(',').map(Number));
const cpuCounts = list(process.argv[3], '1,2,4,8');
const memorySizes = list(process.argv[4], '256,1024,2048,4096');
const tenAtOnce = (process.argv[5] ?? 'ten') !== '-';
const line = (text: string): void => {
  process.stdout.write(`${text}\n`);
};

interface Point {
  tsVmm: BootSample[];
  qemu: BootSample[];
}

async function point(shape: BootShape): Promise<Point> {
  const p: Point = { tsVmm: [], qemu: [] };
  for (let i = 0; i < runs; i++) {
    p.tsVmm.push(await bootSample(tsVmmBoot(shape)));
    p.qemu.push(await bootSample(qemuBoot(shape)));
  }
  return p;
}

function row(label: string, p: Point): string {
  const ms = (s: BootSample[]) => median(s.map((x) => x.firstLineMs));
  const mib = (s: BootSample[]) => median(s.map((x) => x.overheadKiB)) / 1024;
  const cells = [
    `${ms(p.tsVmm).toFixed(0)} ms`,
    `${ms(p.qemu).toFixed(0)} ms`,
    (ms(p.tsVmm) / ms(p.qemu)).toFixed(2),
    `${mib(p.tsVmm).toFixed(1)} MiB`,
    `${mib(p.qemu).toFixed(1)} MiB`,
    (mib(p.tsVmm) / mib(p.qemu)).toFixed(2),
  ];
  return `| ${label} | ${cells.join(' | ')} |`;
}

/** Where a point's CPU went until init's first line: the VMM outside guest mode (user, system) and the guest, in s. */
function cpuRow(label: string, p: Point): string {
  const cpu = (s: BootSample[], part: keyof BootSample['cpuMs']) => (median(s.map((x) => x.cpuMs[part])) / 1000).toFixed(2);
  const cells = (s: BootSample[]) => [cpu(s, 'user'), cpu(s, 'system'), cpu(s, 'guest')];
  return `| ${label} | ${[...cells(p.tsVmm), ...cells(p.qemu)].join(' | ')} |`;
}

/** Ten VMs spawned together: the last first line, and the memory beyond guest RAM of all ten. */
async function together(boot: (shape: BootShape) => VmmCommand, shape: BootShape): Promise<{ ms: number; mib: number }> {
  const samples = await Promise.all(Array.from({ length: 10 }, () => bootSample(boot(shape))));
  return { ms: Math.max(...samples.map((s) => s.firstLineMs)), mib: samples.reduce((sum, s) => sum + s.overheadKiB, 0) / 1024 };
}

async function main(): Promise<void> {
  const guest = await guestAssets();
  try {
    const initrd = await guest.initrd('scaling', `echo ${BOOT_MARKER}\npoweroff -f`);
    const shape = (cpus: number, memoryMiB: number): BootShape => ({ kernel: guest.kernel, initrd, cpus, memoryMiB });
    line(`medians of ${runs} interleaved runs per point; boot = spawn to init's first line; memory = VMM resident memory beyond guest RAM`);
    line('| point | ts-vmm boot | QEMU microvm | ratio | ts-vmm memory | QEMU memory | ratio |');
    line('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    const points: [string, Point][] = [];
    const report = (label: string, p: Point): void => {
      points.push([label, p]);
      line(row(label, p));
    };
    for (const cpus of cpuCounts) report(`${cpus} vCPU${cpus > 1 ? 's' : ''}, 512 MiB`, await point(shape(cpus, 512)));
    for (const memoryMiB of memorySizes) report(`1 vCPU, ${memoryMiB} MiB`, await point(shape(1, memoryMiB)));
    line("\nCPU time of the VMM process until init's first line, s (medians): outside guest mode (user, system) and in it");
    line('| point | ts-vmm user | ts-vmm system | ts-vmm guest | QEMU user | QEMU system | QEMU guest |');
    line('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const [label, p] of points) line(cpuRow(label, p));
    if (!tenAtOnce) return;
    const ten = shape(1, 256);
    const t = await together(tsVmmBoot, ten);
    const q = await together(qemuBoot, ten);
    line(
      `| ten VMs at once, 1 vCPU and 256 MiB each (all first lines; memory added up) | ${t.ms.toFixed(0)} ms | ${q.ms.toFixed(0)} ms | ${(t.ms / q.ms).toFixed(2)} | ${t.mib.toFixed(1)} MiB | ${q.mib.toFixed(1)} MiB | ${(t.mib / q.mib).toFixed(2)} |`,
    );
  } finally {
    await guest.dispose();
  }
}

await main();
