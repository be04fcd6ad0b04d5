// The run behind `ts-vmm boot`, loaded once its options are parsed and its vCPU workers started: the
// guest prepared from the kernel, initrd and command line, the machine run, the outcome reported.
import { readFile } from 'node:fs/promises';
import { prepareBoot, type BootInputs } from '../boot/prepare.js';
import type { VcpuWorkerPool } from '../kvm/vcpu-worker-pool.js';
import { kvmUnsuitableReason } from '../kvm/probe.js';
import { parseDiskOption, parseVsockOption } from './device-options.js';
import { exitStatusOf, formatRegisters, type MachineExit } from '../vmm/exit-status.js';
import { runMachine, type ConfidentialLaunch } from '../vmm/machine.js';
import type { BootOptions } from './boot.js';
import { watching } from './watch-options.js';

export async function boot(options: BootOptions, vcpuWorkers: VcpuWorkerPool): Promise<number> {
  // Disks first, in command-line order, so the guest names them vda, vdb, ... in that order.
  const virtio = [...options.disk.map(parseDiskOption), ...(options.vsock !== undefined ? [parseVsockOption(options.vsock)] : [])];
  // The SEV stack is loaded only for a confidential launch: start-up time is part of every boot.
  const tee = options.tee ? await import('./boot-tee.js') : undefined;
  const inputs = {
    kernel: new Uint8Array(await readFile(options.kernel)),
    initrd: options.initrd ? new Uint8Array(await readFile(options.initrd)) : undefined,
    cmdline: options.cmdline,
    cpus: options.cpus,
    memoryMiB: options.mem,
    virtioDevices: virtio.length,
  };
  const { bootInputs, confidential }: { bootInputs: BootInputs; confidential?: ConfidentialLaunch } =
    tee && options.tee
      ? await tee.confidentialBoot(options.tee, options, inputs)
      : { bootInputs: { ...inputs, entry: options.firmware ? 'firmware' : 'direct' } };
  const prepared = await prepareBoot(bootInputs);
  const unsuitable = kvmUnsuitableReason();
  if (unsuitable !== undefined) {
    process.stderr.write(`ts-vmm: warning: ${unsuitable}; \`ts-vmm lab -- boot ...\` runs this boot in the lab instead\n`);
  }
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  if (raw) stdin.setRawMode(true);
  // Loaded only when asked for: an unwatched boot pays nothing for the watch's modules.
  const watch = watching(options) ? new (await import('../vmm/machine-watch.js')).MachineWatch(options) : undefined;
  let exit: MachineExit;
  try {
    exit = await runMachine({
      confidential,
      boot: prepared,
      virtio,
      consoleOutput: (bytes) => process.stdout.write(bytes),
      consoleInput: stdin,
      vcpuWorkers,
      watch,
    });
  } finally {
    if (raw) stdin.setRawMode(false);
  }
  watch?.finish();
  report(exit, options.dumpRegs ?? false);
  return exitStatusOf(exit);
}

function report(exit: MachineExit, dumpRegs: boolean): void {
  if (exit.kind === 'guest-stopped') return;
  process.stderr.write(`ts-vmm: ${exit.reason}\n`);
  if (dumpRegs && exit.regs) process.stderr.write(`${formatRegisters(exit.regs)}\n`);
}
