// The serial console as a user watches it: `ts-vmm boot` against QEMU microvm booting the same stock kernel
// and initramfs with the kernel log on (no `quiet`), then init writing 8 KiB to the console. Two figures
// per run: spawn to init's first line (the kernel prints its whole log through the polled console path on
// the way) and the 8 KiB through the tty (the 8250 driver's interrupt-driven transmit path). Interleaved
// runs, medians; another ts-vmm build (its bin/ts-vmm.js) can be timed in the same runs. Needs a host whose KVM
// runs guests natively: run it in the lab (docs/BOOT.md).
//
//   node dist/bench/console.js [runs] [vCPUs=1] [other-build/bin/ts-vmm.js]
import { spawn } from 'node:child_process';
import { guestAssets } from '../test/vmm/guest-fixtures.js';
import { qemuBoot, tsVmmBoot, type BootShape, type VmmCommand } from './boot-sample.js';
import { median } from './measure.js';

const INIT_MARKER = 'console-bench-init';
const DONE_MARKER = 'console-bench-done';
const TTY_BYTES = 8 * 1024;
const TIMEOUT_MS = 600_000;

interface ConsoleSample {
  /** Spawn to init's first line, the kernel log printed on the way. */
  kernelLogMs: number;
  /** init's first line to the line after its bytes. */
  ttyMs: number;
}

function consoleSample({ command, args }: VmmCommand): Promise<ConsoleSample> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const ms = (): number => Number(process.hrtime.bigint() - start) / 1e6;
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let init: number | undefined;
    let done: number | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    const watch = (d: Buffer): void => {
      output += d.toString('latin1');
      if (init === undefined && output.includes(INIT_MARKER)) init = ms();
      if (done === undefined && output.includes(DONE_MARKER)) done = ms();
    };
    child.stdout.on('data', watch);
    child.stderr.on('data', watch);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      const printed = output.split(DONE_MARKER)[0]!.split(INIT_MARKER)[1] ?? '';
      const ttyBytes = (printed.match(/x/g) ?? []).length;
      if (init === undefined || done === undefined)
        reject(new Error(`${command} exited with ${status} before the console bench ended:\n${output.slice(-2000)}`));
      else if (ttyBytes !== TTY_BYTES) reject(new Error(`${command}: ${ttyBytes} of the ${TTY_BYTES} bytes init wrote reached the console`));
      else resolve({ kernelLogMs: init, ttyMs: done - init });
    });
  });
}

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 5);
  const cpus = Number(process.argv[3] ?? 1);
  const otherCli = process.argv[4] || undefined;
  const guest = await guestAssets();
  const init = [`echo ${INIT_MARKER}`, `printf '%${TTY_BYTES}s' '' | tr ' ' x`, 'echo', `echo ${DONE_MARKER}`, 'poweroff -f'].join('\n');
  const shape: BootShape = { kernel: guest.kernel, initrd: await guest.initrd('console-bench', init), cpus, memoryMiB: 512, cmdline: 'console=ttyS0' };
  const samples = { tsVmm: [] as ConsoleSample[], qemu: [] as ConsoleSample[], other: [] as ConsoleSample[] };
  const take = async (name: string, into: ConsoleSample[], command: VmmCommand): Promise<void> => {
    const sample = await consoleSample(command);
    into.push(sample);
    console.log(`${name}: kernel log ${sample.kernelLogMs.toFixed(0)} ms, tty ${sample.ttyMs.toFixed(0)} ms`);
  };
  for (let i = 0; i < runs; i++) {
    await take('ts-vmm', samples.tsVmm, tsVmmBoot(shape));
    await take('QEMU', samples.qemu, qemuBoot(shape));
    if (otherCli !== undefined) await take(otherCli, samples.other, tsVmmBoot(shape, otherCli));
  }
  const log = (s: ConsoleSample[]): number => median(s.map((x) => x.kernelLogMs));
  const tty = (s: ConsoleSample[]): number => median(s.map((x) => x.ttyMs));
  console.log(`console, ${cpus} vCPU(s), kernel log on; medians of ${runs} interleaved runs`);
  console.log('| what | ts-vmm | QEMU microvm | ratio |');
  console.log('| --- | ---: | ---: | ---: |');
  console.log(
    `| spawn to init's first line, the kernel log on the console | ${log(samples.tsVmm).toFixed(0)} ms | ${log(samples.qemu).toFixed(0)} ms | ${(log(samples.tsVmm) / log(samples.qemu)).toFixed(2)}x |`,
  );
  const rate = (s: ConsoleSample[]): number => TTY_BYTES / (tty(s) / 1000);
  console.log(
    `| ${TTY_BYTES / 1024} KiB written by init to the console (tty) | ${rate(samples.tsVmm).toFixed(0)} B/s | ${rate(samples.qemu).toFixed(0)} B/s | ${(rate(samples.tsVmm) / rate(samples.qemu)).toFixed(2)} |`,
  );
  if (otherCli === undefined) return;
  console.log(
    `\nagainst ${otherCli} in the same runs: kernel log ${log(samples.other).toFixed(0)} ms (${(log(samples.tsVmm) / log(samples.other)).toFixed(2)}x), tty ${rate(samples.other).toFixed(0)} B/s (${(rate(samples.tsVmm) / rate(samples.other)).toFixed(2)})`,
  );
}

main().catch((e: unknown) => {
  console.error(`console bench: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
