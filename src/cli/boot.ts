// `ts-vmm boot`: start a Linux kernel (bzImage or vmlinux) with an optional initrd on KVM, the serial
// console on stdin/stdout. Exit status: 0 when the guest powers off or reboots, 2 when it fails
// (triple fault, kernel panic, failed VM entry, KVM internal error), 1 when ts-vmm itself fails.
import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError } from 'commander';
import { prepareBoot, type EntryPath } from '../boot/prepare.js';
import { parseDiskOption, parseVsockOption } from '../virtio/factory.js';
import { exitStatusOf, formatRegisters, type MachineExit } from '../vmm/exit-status.js';
import { kvmUnsuitableReason } from '../lab/kvm-probe.js';
import { runMachine } from '../vmm/machine.js';

export const DEFAULT_MEMORY_MIB = 512;

interface BootOptions {
  kernel: string;
  initrd?: string;
  cmdline: string;
  cpus: number;
  mem: number;
  disk: string[];
  vsock?: string;
  firmware?: boolean;
  dumpRegs?: boolean;
}

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`'${value}' is not a positive integer`);
  return n;
}

async function boot(options: BootOptions): Promise<number> {
  // Disks first, in command-line order, so the guest names them vda, vdb, ... in that order.
  const virtio = [...options.disk.map(parseDiskOption), ...(options.vsock !== undefined ? [parseVsockOption(options.vsock)] : [])];
  const entry: EntryPath = options.firmware ? 'firmware' : 'direct';
  const prepared = await prepareBoot({
    kernel: new Uint8Array(await readFile(options.kernel)),
    initrd: options.initrd ? new Uint8Array(await readFile(options.initrd)) : undefined,
    cmdline: options.cmdline,
    cpus: options.cpus,
    memoryMiB: options.mem,
    virtioDevices: virtio.length,
    entry,
  });
  const unsuitable = kvmUnsuitableReason();
  if (unsuitable !== undefined) {
    process.stderr.write(`ts-vmm: warning: ${unsuitable}; \`ts-vmm lab -- boot ...\` runs this boot in the lab instead\n`);
  }
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  if (raw) stdin.setRawMode(true);
  let exit: MachineExit;
  try {
    exit = await runMachine({
      boot: prepared,
      virtio,
      consoleOutput: (bytes) => process.stdout.write(bytes),
      consoleInput: stdin,
    });
  } finally {
    if (raw) stdin.setRawMode(false);
  }
  report(exit, options.dumpRegs ?? false);
  return exitStatusOf(exit);
}

function report(exit: MachineExit, dumpRegs: boolean): void {
  if (exit.kind === 'guest-stopped') return;
  process.stderr.write(`ts-vmm: ${exit.reason}\n`);
  if (dumpRegs && exit.regs) process.stderr.write(`${formatRegisters(exit.regs)}\n`);
}

export function register(program: Command): void {
  program
    .command('boot')
    .description('boot a Linux kernel on KVM; the guest serial console is stdin/stdout')
    .requiredOption('--kernel <file>', 'bzImage or ELF vmlinux')
    .option('--initrd <file>', 'initial ramdisk (cpio archive, optionally compressed)')
    .option('--cmdline <string>', 'kernel command line, kept as given (device parameters are appended)', '')
    .option('--cpus <n>', 'vCPUs', positiveInteger, 1)
    .option('--mem <MiB>', 'guest RAM in MiB', positiveInteger, DEFAULT_MEMORY_MIB)
    .option('--disk <file[,ro]>', 'virtio-blk disk (repeatable; vda, vdb, ... in order)', (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--vsock <cid,uds_path>', 'virtio-vsock device with guest CID, host side on a Unix socket')
    .option('--firmware', 'start at the reset vector in the ts-vmm firmware instead of the direct 64-bit entry')
    .option('--dump-regs', 'print the registers of the failing vCPU when the guest fails')
    .action(async (options: BootOptions) => {
      process.exitCode = await boot(options);
    });
}
