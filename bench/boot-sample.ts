// One boot of the stock kernel to init's first line under a VMM (`ts-vmm boot` or QEMU microvm): the time from
// spawning the VMM, and the VMM's resident memory beyond guest RAM and its CPU time at that moment. Shared by the
// boot-time and scaling benchmarks, so both measure the same thing the same way.
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ramRanges } from '../src/boot/layout.js';
import { cpuTimes } from '../src/sys/cpu-times.js';

export const BOOT_MARKER = 'bench-init-first-line';
export const BOOT_CMDLINE = 'console=ttyS0 quiet';
const CLI = fileURLToPath(new URL('../../bin/ts-vmm.js', import.meta.url));
const TIMEOUT_MS = 600_000;

export interface BootSample {
  /** Milliseconds from spawn to the marker on the console. */
  firstLineMs: number;
  /** Resident memory of the VMM process minus the resident part of guest RAM, in KiB. */
  overheadKiB: number;
  /** CPU time of the VMM process (all its threads) until then, in ms: outside guest mode (user, system) and in it. */
  cpuMs: { user: number; system: number; guest: number };
}

export interface BootShape {
  kernel: string;
  initrd: string;
  cpus: number;
  memoryMiB: number;
  /** BOOT_CMDLINE unless given. */
  cmdline?: string;
}

/** A VMM's command line, and the sizes in KiB of the mappings that hold its guest RAM. */
export interface VmmCommand {
  command: string;
  args: string[];
  guestRamKiB: number[];
}

/** `ts-vmm boot` of this guest, with another build's CLI if given; RAM above the MMIO hole is a mapping of its own. */
export function tsVmmBoot(shape: BootShape, cli = CLI): VmmCommand {
  const memory = ['--mem', String(shape.memoryMiB), '--cpus', String(shape.cpus)];
  return {
    command: process.execPath,
    args: [cli, 'boot', '--kernel', shape.kernel, '--initrd', shape.initrd, '--cmdline', shape.cmdline ?? BOOT_CMDLINE, ...memory],
    guestRamKiB: ramRanges(shape.memoryMiB * 1024 * 1024).map((r) => r.size / 1024),
  };
}

/** QEMU microvm with KVM booting the same guest; its RAM is one mapping. */
export function qemuBoot(shape: BootShape): VmmCommand {
  const machine = ['-M', 'microvm,acpi=on', '-accel', 'kvm', '-cpu', 'host', '-m', String(shape.memoryMiB), '-smp', String(shape.cpus)];
  const io = ['-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot'];
  return {
    command: 'qemu-system-x86_64',
    args: [...machine, ...io, '-kernel', shape.kernel, '-initrd', shape.initrd, '-append', shape.cmdline ?? BOOT_CMDLINE],
    guestRamKiB: [shape.memoryMiB * 1024],
  };
}

/** VmRSS minus the Rss of the guest-RAM mappings (one mapping of each of the given sizes). */
export async function overheadKiB(pid: number, guestRamKiB: readonly number[]): Promise<number> {
  const smaps = await readFile(`/proc/${pid}/smaps`, 'utf8');
  const wanted = [...guestRamKiB];
  let total = 0;
  let guest = 0;
  let inGuestRam = false;
  for (const line of smaps.split('\n')) {
    const size = /^Size:\s+(\d+) kB/.exec(line);
    if (size) {
      const at = wanted.indexOf(Number(size[1]));
      inGuestRam = at >= 0;
      if (inGuestRam) wanted.splice(at, 1);
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) {
      total += Number(rss[1]);
      if (inGuestRam) guest += Number(rss[1]);
    }
  }
  if (wanted.length > 0) throw new Error(`process ${pid} has no mapping of ${wanted.join(', ')} KiB: which one is guest RAM is unknown`);
  return total - guest;
}

/** Spawns the VMM and resolves once it has exited, with the sample taken at init's first line. */
export function bootSample({ command, args, guestRamKiB }: VmmCommand): Promise<BootSample> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let sample: Promise<BootSample> | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    child.stdout.on('data', (d: Buffer) => {
      output += d.toString('latin1');
      if (!sample && output.includes(BOOT_MARKER)) {
        const firstLineMs = Number(process.hrtime.bigint() - start) / 1e6;
        const cpu = cpuTimes(`/proc/${child.pid}/stat`);
        const cpuMs = { user: cpu.user - cpu.guest, system: cpu.system, guest: cpu.guest };
        sample = overheadKiB(child.pid!, guestRamKiB).then((kib) => ({ firstLineMs, overheadKiB: kib, cpuMs }));
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      output += d.toString('latin1');
    });
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      if (!sample) reject(new Error(`${command} exited with ${status} before init's first line:\n${output.slice(-2000)}`));
      else void sample.then(resolve, reject);
    });
  });
}
