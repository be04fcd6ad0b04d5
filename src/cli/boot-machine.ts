// The run behind `ts-vmm boot`, loaded once its options are parsed and its vCPU workers started: the
// guest prepared from the kernel, initrd and command line, the machine run, the outcome reported. `ts-vmm run`
// runs its VM here too, inside the run's own process, with the console its own and a way to stop the VM.
import { loadFiles } from '../sys/mapped-file.js';
import { stderrLog } from '../assets/debian.js';
import { prepareBoot, type BootInputs } from '../boot/prepare.js';
import type { VcpuWorkerPool } from '../kvm/vcpu-worker-pool.js';
import { kvmUnsuitableReason } from '../kvm/probe.js';
import { parseDiskOption, parseVsockOption } from './device-options.js';
import { exitStatusOf, formatRegisters, type MachineExit } from '../vmm/exit-status.js';
import { runMachine, type ConfidentialLaunch } from '../vmm/machine.js';
import type { BootOptions } from './boot.js';
import { watching } from './watch-options.js';

/** Where a machine's console goes and comes from, where its notices go, and what stops it from outside. */
export interface MachineIo {
  consoleOutput: (bytes: Uint8Array) => void;
  consoleInput?: NodeJS.ReadableStream;
  stop?: AbortSignal;
  /** Warnings, a measured launch's measurement and sev-sim's notice (`ts-vmm boot`: stderr). */
  report: (message: string) => void;
}

/** Prepares the guest the options describe and runs it to its end. */
export async function bootMachine(options: BootOptions, vcpuWorkers: VcpuWorkerPool, io: MachineIo): Promise<MachineExit> {
  // Disks first, in command-line order, so the guest names them vda, vdb, ... in that order.
  const virtio = [...options.disk.map(parseDiskOption), ...(options.vsock !== undefined ? [parseVsockOption(options.vsock)] : [])];
  // The SEV stack is loaded only for a confidential launch: start-up time is part of every boot.
  const tee = options.tee ? await import('./boot-tee.js') : undefined;
  // Mapped where they can be and let go of once in guest RAM (bootPlaced below), so no copy stays resident.
  const kernel = await loadFiles([options.kernel]);
  // Several archives one after the other, as a bootloader loads several initrds.
  const initrd = options.initrd.length > 0 ? await loadFiles(options.initrd) : undefined;
  const inputs = {
    kernel: kernel.bytes,
    initrd: initrd?.bytes,
    cmdline: options.cmdline,
    cpus: options.cpus,
    memoryMiB: options.mem,
    virtioDevices: virtio.length,
  };
  const { bootInputs, confidential }: { bootInputs: BootInputs; confidential?: ConfidentialLaunch } =
    tee && options.tee
      ? await tee.confidentialBoot(options.tee, options, inputs, io.report)
      : { bootInputs: { ...inputs, entry: options.firmware ? 'firmware' : 'direct' } };
  const prepared = await prepareBoot(bootInputs);
  const unsuitable = kvmUnsuitableReason();
  if (unsuitable !== undefined) {
    io.report(`warning: ${unsuitable}; \`ts-vmm lab -- boot ...\` runs this boot in the lab instead`);
  }
  // Loaded only when asked for: an unwatched boot pays nothing for the watch's modules.
  const watch = watching(options) ? new (await import('../vmm/machine-watch.js')).MachineWatch(options) : undefined;
  const { consoleOutput, consoleInput, stop } = io;
  const bootPlaced = (): void => {
    kernel.release();
    initrd?.release();
  };
  const exit = await runMachine({ confidential, boot: prepared, virtio, consoleOutput, consoleInput, stop, vcpuWorkers, watch, bootPlaced });
  watch?.finish();
  return exit;
}

/** `ts-vmm boot`: the console on stdin and stdout, the end reported on stderr; returns the exit status. */
export async function boot(options: BootOptions, vcpuWorkers: VcpuWorkerPool): Promise<number> {
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  if (raw) stdin.setRawMode(true);
  let exit: MachineExit;
  try {
    exit = await bootMachine(options, vcpuWorkers, { consoleOutput: (bytes) => process.stdout.write(bytes), consoleInput: stdin, report: stderrLog });
  } finally {
    if (raw) stdin.setRawMode(false);
  }
  report(exit, options.dumpRegs ?? false);
  return exitStatusOf(exit);
}

function report(exit: MachineExit, dumpRegs: boolean): void {
  if (exit.kind === 'guest-stopped') return;
  process.stderr.write(`ts-vmm: ${exit.reason}\n`);
  if (dumpRegs && 'regs' in exit && exit.regs) process.stderr.write(`${formatRegisters(exit.regs)}\n`);
}
