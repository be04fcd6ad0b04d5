// Time from process start to the guest's first line from init, and the VMM's resident memory beyond
// guest RAM, for `ts-vmm boot` and for QEMU's microvm (`-M microvm,acpi=on -accel kvm`) booting the
// same stock Debian kernel and initramfs in the same run. Needs a host whose KVM runs guests natively:
// run it in the lab (docs/BOOT.md gives the command).
//
// A second ts-vmm build (its bin/ts-vmm.js) can be timed in the same run, interleaved: the A/B for a change
// that must not move the boot (tracing compiled in but off, against the commit before it).
//
//   node dist/bench/boot-time.js [runs] [other-build/bin/ts-vmm.js]
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { guestAssets } from '../test/vmm/guest-fixtures.js';
import { median } from './measure.js';

const MARKER = 'bench-init-first-line';
const CMDLINE = 'console=ttyS0 quiet';
const MEMORY_MIB = 512;
const CLI = fileURLToPath(new URL('../../bin/ts-vmm.js', import.meta.url));
const TIMEOUT_MS = 600_000;

interface Sample {
  /** Milliseconds from spawn to the marker on the console. */
  firstLineMs: number;
  /** Resident memory of the VMM process minus the resident part of guest RAM, in KiB. */
  overheadKiB: number;
}

/** VmRSS minus the Rss of the guest-RAM mapping (the one mapping exactly MEMORY_MIB in size). */
async function overheadKiB(pid: number): Promise<number> {
  const smaps = await readFile(`/proc/${pid}/smaps`, 'utf8');
  let total = 0;
  let guest = 0;
  let inGuestRam = false;
  for (const line of smaps.split('\n')) {
    const size = /^Size:\s+(\d+) kB/.exec(line);
    if (size) inGuestRam = Number(size[1]) === MEMORY_MIB * 1024;
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) {
      total += Number(rss[1]);
      if (inGuestRam) guest += Number(rss[1]);
    }
  }
  return total - guest;
}

function measure(command: string, args: readonly string[]): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let sample: Promise<Sample> | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    child.stdout.on('data', (d: Buffer) => {
      output += d.toString('latin1');
      if (!sample && output.includes(MARKER)) {
        const firstLineMs = Number(process.hrtime.bigint() - start) / 1e6;
        sample = overheadKiB(child.pid!).then((kib) => ({ firstLineMs, overheadKiB: kib }));
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

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 5);
  const otherCli = process.argv[3];
  const guest = await guestAssets();
  const initrd = await guest.initrd('bench', `echo ${MARKER}\npoweroff -f`);
  const bootArgs = ['boot', '--kernel', guest.kernel, '--initrd', initrd, '--cmdline', CMDLINE, '--mem', String(MEMORY_MIB)];
  const tsVmm = [CLI, ...bootArgs];
  const qemu = [
    '-M',
    'microvm,acpi=on',
    '-accel',
    'kvm',
    '-cpu',
    'host',
    '-m',
    String(MEMORY_MIB),
    '-smp',
    '1',
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-serial',
    'stdio',
    '-no-reboot',
    '-kernel',
    guest.kernel,
    '-initrd',
    initrd,
    '-append',
    CMDLINE,
  ];
  const results = { tsVmm: [] as Sample[], qemu: [] as Sample[], other: [] as Sample[] };
  // Interleaved, so drift in the host (page cache, frequency) hits both alike.
  for (let i = 0; i < runs; i++) {
    results.tsVmm.push(await measure(process.execPath, tsVmm));
    results.qemu.push(await measure('qemu-system-x86_64', qemu));
    if (otherCli !== undefined) results.other.push(await measure(process.execPath, [otherCli, ...bootArgs]));
  }
  const row = (name: string, s: Sample[]) =>
    `${name.padEnd(22)} ${median(s.map((x) => x.firstLineMs))
      .toFixed(0)
      .padStart(8)} ms   ${median(s.map((x) => x.overheadKiB))
      .toString()
      .padStart(8)} KiB`;
  process.stdout.write(`boot to init's first line (median of ${runs}), VMM resident memory beyond guest RAM\n`);
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
