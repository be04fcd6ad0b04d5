// `ts-vmm boot`: start a Linux kernel (bzImage or vmlinux) with an optional initrd on KVM, the serial
// console on stdin/stdout. Exit status: 0 when the guest powers off or reboots, 2 when it fails
// (triple fault, kernel panic, failed VM entry, KVM internal error), 1 when ts-vmm itself fails.
import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError } from 'commander';
import { prepareBoot, type EntryPath } from '../boot/prepare.js';
import { exitStatusOf, formatRegisters, type MachineExit } from '../vmm/exit-status.js';
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

export interface DiskSpec { path: string; readOnly: boolean }
export interface VsockSpec { cid: number; udsPath: string }

export function parseDisk(value: string): DiskSpec {
  const [path, ...flags] = value.split(',');
  if (!path) throw new InvalidArgumentError(`'${value}': expected FILE[,ro]`);
  for (const f of flags) if (f !== 'ro') throw new InvalidArgumentError(`'${value}': unknown disk option '${f}' (only 'ro')`);
  return { path, readOnly: flags.includes('ro') };
}

export function parseVsock(value: string): VsockSpec {
  const comma = value.indexOf(',');
  const cid = Number(value.slice(0, comma));
  const udsPath = value.slice(comma + 1);
  // CIDs 0-2 are reserved (hypervisor, local, host); 0xffffffff is VMADDR_CID_ANY.
  if (comma < 0 || !Number.isInteger(cid) || cid < 3 || cid >= 0xffff_ffff || udsPath.length === 0) {
    throw new InvalidArgumentError(`'${value}': expected CID,UDS_PATH with CID 3..4294967294`);
  }
  return { cid, udsPath };
}

async function boot(options: BootOptions): Promise<number> {
  if (options.disk.length > 0 || options.vsock !== undefined) {
    throw new Error('--disk and --vsock need the virtio device factory, which this build does not have yet');
  }
  const entry: EntryPath = options.firmware ? 'firmware' : 'direct';
  const prepared = await prepareBoot({
    kernel: new Uint8Array(await readFile(options.kernel)),
    initrd: options.initrd ? new Uint8Array(await readFile(options.initrd)) : undefined,
    cmdline: options.cmdline,
    cpus: options.cpus,
    memoryMiB: options.mem,
    virtioDevices: 0,
    entry,
  });
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  if (raw) stdin.setRawMode(true);
  let exit: MachineExit;
  try {
    exit = await runMachine({
      boot: prepared,
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
      options.disk.forEach(parseDisk);
      if (options.vsock !== undefined) parseVsock(options.vsock);
      process.exitCode = await boot(options);
    });
}
