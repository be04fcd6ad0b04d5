// Guest-side virtio throughput of ts-vmm next to QEMU's microvm (`-M microvm,acpi=on -accel kvm`,
// `virtio-blk-device` and the in-kernel `vhost-vsock-device`) in the same run: the same stock Debian
// kernel, initramfs and disk image, interleaved boots. The guest measures, with the kernel's own
// clock: sequential direct-I/O write and read of the disk (dd bs=1M, O_DIRECT: the device, not the
// page cache), and vsock host->guest and guest->host. The host ends of vsock are this process over
// ts-vmm's Unix-socket protocol, and socat on AF_VSOCK for QEMU's vhost (Node has no AF_VSOCK).
// Alongside, per MiB moved: the host kernel's KVM counters (debugfs: exits, MMIO exits to user space,
// injected interrupts) and the VMM's CPU time (/proc: its main thread; all its threads outside guest
// mode, with QEMU's vhost worker; guest mode). Needs a host whose KVM runs guests natively: run it in
// the lab (docs/VIRTIO.md gives the command).
//
//   node dist/bench/virtio-lab.js [runs] [disk MiB] [vsock MiB]
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureBusybox, ensureDebianKernel } from '../src/assets/debian.js';
import { writeInitramfs } from '../src/initramfs/builder.js';
import { ModuleTree, readModuleImage } from '../src/initramfs/modules.js';
import { findProgram, sharedLibraries } from '../src/oci/host-programs.js';
import { cpuTimes } from '../src/sys/cpu-times.js';

const CLI = fileURLToPath(new URL('../../bin/ts-vmm.js', import.meta.url));
const CMDLINE = 'console=ttyS0 quiet';
const MEMORY_MIB = 512;
const GUEST_CID = 3;
/** Host ports the guest connects to: one sends it data, one counts what it sends. */
const PORT = { toGuest: 5002, fromGuest: 5001 } as const;
const TIMEOUT_MS = 900_000;
const KVM_STATS = '/sys/kernel/debug/kvm';
/** KVM's debugfs counters (summed over all VMs) read around each measurement. */
const COUNTERS = ['exits', 'mmio_exits', 'irq_injections'] as const;
type Counters = Record<(typeof COUNTERS)[number], number>;

const MEASUREMENTS = ['disk-write', 'disk-read', 'vsock-to-guest', 'vsock-from-guest'] as const;
type Measurement = (typeof MEASUREMENTS)[number];

/** CPU time of one VMM, in ms. */
interface Cpu {
  /** The VMM's main thread (ts-vmm: device models and the event loop; QEMU: its main loop), user and system. */
  mainUser: number;
  mainSystem: number;
  /** Every thread of the VMM outside guest mode, and QEMU's vhost worker (in-kernel device work). */
  host: number;
  /** Time the vCPUs ran the guest. */
  guest: number;
}

interface Sample {
  mbPerSecond: number;
  /** Counter deltas per MiB moved. */
  perMiB: Counters & Cpu;
}

/** In-kernel vhost workers are kernel threads named vhost-<owner pid>. */
function vhostWorkers(pid: number): string[] {
  return fs
    .readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .filter((e) => {
      try {
        return fs.readFileSync(`/proc/${e}/comm`, 'utf8').trim() === `vhost-${pid}`;
      } catch {
        return false; // gone meanwhile
      }
    });
}

function readCpu(pid: number): Cpu {
  // The process's own stat includes threads that already exited (QEMU's I/O workers come and go).
  const all = cpuTimes(`/proc/${pid}/stat`);
  const main = cpuTimes(`/proc/${pid}/task/${pid}/stat`);
  const vhost = vhostWorkers(pid).reduce((n, w) => n + cpuTimes(`/proc/${w}/stat`).total, 0);
  return { mainUser: main.user - main.guest, mainSystem: main.system, host: all.total - all.guest + vhost, guest: all.guest };
}

/**
 * The guest's /init: each measurement is timed with the kernel's monotonic clock (`now at ... nsecs`
 * of /proc/timer_list; busybox's date has no sub-second format) and reported as
 * `bench <name> <start ns> <end ns> <bytes> (status <exit status>)`, announced by `bench-start <name>`; a
 * measurement that failed has no byte count, and its status and socat's complaint say why.
 */
function initScript(modules: readonly string[], diskMiB: number, vsockMiB: number): string {
  const blocks64k = vsockMiB * 16;
  return `
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
${modules.map((m) => `insmod /modules/${m}.ko`).join('\n')}
for i in $(seq 200); do [ -b /dev/vda ] && ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport | grep -q virtio && break; sleep 0.1; done
now() { sed -n '3{s/^now at \\([0-9]*\\) nsecs$/\\1/p;q}' /proc/timer_list; }
measure() { name=$1; shift; echo "bench-start $name"; t0=$(now); bytes=$(sh -c "$*"); status=$?; t1=$(now); echo "bench $name $t0 $t1 $bytes (status $status)"; }
measure disk-write 'dd if=/dev/zero of=/dev/vda bs=1M count=${diskMiB} oflag=direct 2>/dev/null && echo ${diskMiB * 1048576}'
measure disk-read 'dd if=/dev/vda of=/dev/null bs=1M count=${diskMiB} iflag=direct 2>/dev/null && echo ${diskMiB * 1048576}'
measure vsock-to-guest 'socat -u VSOCK-CONNECT:2:${PORT.toGuest} - | wc -c'
measure vsock-from-guest 'dd if=/dev/zero bs=64k count=${blocks64k} 2>/dev/null | socat -t 600 - VSOCK-CONNECT:2:${PORT.fromGuest}'
sleep 1 # the console's last lines (a failed measurement's status, socat's complaint) drain before power-off
poweroff -f
`;
}

function readCounters(): Counters {
  const c = {} as Counters;
  for (const name of COUNTERS) c[name] = Number(fs.readFileSync(path.join(KVM_STATS, name), 'utf8'));
  return c;
}

/** Runs one VMM to its end, turning the guest's `bench` lines into samples. */
function runGuest(command: string, args: readonly string[]): Promise<Map<Measurement, Sample>> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const samples = new Map<Measurement, Sample>();
    let output = ''; // both streams, for the error message
    let stdout = '';
    let scanned = 0;
    let before: (Counters & Cpu) | undefined;
    const snapshot = (): Counters & Cpu => ({ ...readCounters(), ...readCpu(child.pid!) });
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    child.stdout.on('data', (d: Buffer) => {
      output += d.toString('latin1');
      stdout += d.toString('latin1');
      for (let eol = stdout.indexOf('\n', scanned); eol >= 0; eol = stdout.indexOf('\n', scanned)) {
        const line = stdout.slice(scanned, eol).trim();
        scanned = eol + 1;
        if (line.startsWith('bench-start ')) {
          before = snapshot();
          // Progress on stderr: a run that stalls shows which VMM and measurement it stalled in.
          process.stderr.write(`virtio-lab: ${path.basename(command)}: ${line.slice('bench-start '.length)}\n`);
        }
        const m = /^bench (\S+) (\d+) (\d+) (\d+)/.exec(line);
        if (!m || !before) continue;
        const after = snapshot();
        const bytes = Number(m[4]);
        const seconds = (Number(m[3]) - Number(m[2])) / 1e9;
        const perMiB = {} as Counters & Cpu;
        for (const name of Object.keys(after) as (keyof typeof after)[]) perMiB[name] = (after[name] - before[name]) / (bytes / 1048576);
        samples.set(m[1] as Measurement, { mbPerSecond: bytes / 1e6 / seconds, perMiB });
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      output += d.toString('latin1');
    });
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      const missing = MEASUREMENTS.filter((m) => !samples.has(m));
      if (missing.length > 0)
        reject(new Error(`${path.basename(command)} exited with ${status} before measuring ${missing.join(', ')}:\n${output.slice(-3000)}`));
      else resolve(samples);
    });
  });
}

/** ts-vmm's host end of vsock: Unix-socket listeners that send `bytes` and count what arrives. */
async function tsVmmVsockPeers(uds: string, bytes: number): Promise<() => void> {
  const blob = Buffer.alloc(bytes);
  const toGuest = net.createServer((s) => {
    s.on('error', () => {});
    s.end(blob);
  });
  const fromGuest = net.createServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      n += d.length;
    });
    s.on('end', () => s.end(`${n}\n`));
  });
  await Promise.all(
    [
      [toGuest, PORT.toGuest],
      [fromGuest, PORT.fromGuest],
    ].map(
      ([server, port]) =>
        new Promise<void>((resolve, reject) => {
          (server as net.Server).once('error', reject).listen(`${uds}_${port as number}`, resolve);
        }),
    ),
  );
  return () => {
    toGuest.close();
    fromGuest.close();
  };
}

/** QEMU's host end of vhost-vsock: socat on AF_VSOCK doing the same as tsVmmVsockPeers. */
function qemuVsockPeers(blobPath: string): { stop: () => void; log: () => string } {
  let log = '';
  const peers: ChildProcess[] = [
    spawn('socat', ['-d', '-d', '-u', `OPEN:${blobPath}`, `VSOCK-LISTEN:${PORT.toGuest},reuseaddr`], { stdio: ['ignore', 'ignore', 'pipe'] }),
    spawn('socat', ['-d', '-d', '-t', '600', `VSOCK-LISTEN:${PORT.fromGuest},reuseaddr`, 'SYSTEM:wc -c'], { stdio: ['ignore', 'ignore', 'pipe'] }),
  ];
  for (const p of peers)
    p.stderr?.on('data', (d: Buffer) => {
      log += d.toString('latin1');
    });
  return {
    stop: () => {
      for (const p of peers) p.kill('SIGKILL');
    },
    log: () => log,
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 3);
  const diskMiB = Number(process.argv[3] ?? 128);
  const vsockMiB = Number(process.argv[4] ?? 32);
  for (const [name, v] of [
    ['runs', runs],
    ['disk MiB', diskMiB],
    ['vsock MiB', vsockMiB],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, not ${v}`);
  }
  if (!fs.existsSync(path.join(KVM_STATS, 'exits'))) {
    fs.mkdirSync('/sys/kernel/debug', { recursive: true });
    await new Promise<void>((resolve, reject) =>
      spawn('mount', ['-t', 'debugfs', 'debugfs', '/sys/kernel/debug'], { stdio: 'inherit' }).on('close', (s) =>
        s === 0 ? resolve() : reject(new Error(`mounting debugfs failed (${s}): KVM's counters are read from ${KVM_STATS}`)),
      ),
    );
  }

  const [kernel, busybox] = await Promise.all([ensureDebianKernel(), ensureBusybox()]);
  const modules = await (await ModuleTree.open(kernel.modulesDir)).loadOrder(['virtio_mmio', 'virtio_blk', 'vmw_vsock_virtio_transport']);
  const socat = findProgram('socat');
  if (socat === undefined) throw new Error('socat not found (Debian package socat)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-vmm-virtio-lab-'));
  const stops: (() => void)[] = [];
  try {
    const initrd = path.join(dir, 'initrd.cpio');
    await writeInitramfs(initrd, 'none', async (b) => {
      for (const d of ['proc', 'sys', 'dev', 'modules']) await b.mkdirp(d);
      await b.hostFile(busybox.path, 'bin/busybox');
      for (const m of modules) await b.file(`modules/${m.name}.ko`, await readModuleImage(m.path));
      for (const f of new Set([socat, ...(await sharedLibraries(socat))])) await b.hostFile(f, f.slice(1));
      await b.file(
        'init',
        `#!/bin/busybox sh\n/bin/busybox --install -s /bin\n${initScript(
          modules.map((m) => m.name),
          diskMiB,
          vsockMiB,
        )}`,
        { mode: 0o755 },
      );
    });
    // Written through once so that neither VMM reads holes.
    const disk = path.join(dir, 'disk.img');
    const pattern = Buffer.alloc(1 << 20, 0xa5);
    const fd = fs.openSync(disk, 'w');
    for (let i = 0; i < diskMiB; i++) fs.writeSync(fd, pattern);
    fs.closeSync(fd);
    const blob = path.join(dir, 'to-guest.bin');
    fs.writeFileSync(blob, Buffer.alloc(vsockMiB << 20));

    const uds = path.join(dir, 'vsock');
    stops.push(await tsVmmVsockPeers(uds, vsockMiB << 20));
    const tsVmm = [
      CLI,
      'boot',
      '--kernel',
      kernel.vmlinuz,
      '--initrd',
      initrd,
      '--cmdline',
      CMDLINE,
      '--mem',
      String(MEMORY_MIB),
      '--disk',
      disk,
      '--vsock',
      `${GUEST_CID},${uds}`,
    ];
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
      kernel.vmlinuz,
      '-initrd',
      initrd,
      '-append',
      CMDLINE,
      '-drive',
      `id=vda,file=${disk},format=raw,if=none`,
      '-device',
      'virtio-blk-device,drive=vda',
      '-device',
      `vhost-vsock-device,guest-cid=${GUEST_CID}`,
    ];
    const results = { tsVmm: [] as Map<Measurement, Sample>[], qemu: [] as Map<Measurement, Sample>[] };
    // Interleaved, so drift in the host (other jobs, page cache) hits both alike.
    for (let i = 0; i < runs; i++) {
      results.tsVmm.push(await runGuest(process.execPath, tsVmm));
      const peers = qemuVsockPeers(blob);
      try {
        results.qemu.push(await runGuest('qemu-system-x86_64', qemu));
      } catch (e) {
        throw new Error(`${(e as Error).message}\nthe host's socat peers said:\n${peers.log().slice(-3000)}`);
      } finally {
        peers.stop();
      }
    }

    const med = (vmm: Map<Measurement, Sample>[], m: Measurement, f: (s: Sample) => number): number => median(vmm.map((r) => f(r.get(m)!)));
    const out: string[] = [
      `virtio throughput in the guest, median of ${runs} (disk ${diskMiB} MiB, vsock ${vsockMiB} MiB)`,
      `${'measurement'.padEnd(18)} ${'ts-vmm MB/s'.padStart(12)} ${'QEMU MB/s'.padStart(12)} ${'ratio'.padStart(7)}`,
    ];
    for (const m of MEASUREMENTS) {
      const a = med(results.tsVmm, m, (s) => s.mbPerSecond);
      const b = med(results.qemu, m, (s) => s.mbPerSecond);
      out.push(`${m.padEnd(18)} ${a.toFixed(2).padStart(12)} ${b.toFixed(2).padStart(12)} ${(a / b).toFixed(3).padStart(7)}`);
    }
    out.push(
      '',
      'per MiB moved (medians): KVM exits, MMIO exits to user space, interrupts injected; VMM CPU ms: main thread user and system, outside guest mode (all threads + vhost), guest mode',
    );
    const columns: [string, keyof (Counters & Cpu)][] = [
      ['exits', 'exits'],
      ['mmio', 'mmio_exits'],
      ['irqs', 'irq_injections'],
      ['main usr', 'mainUser'],
      ['main sys', 'mainSystem'],
      ['host ms', 'host'],
      ['guest ms', 'guest'],
    ];
    out.push(`${'measurement'.padEnd(18)} ${'VMM'.padEnd(7)} ${columns.map(([h]) => h.padStart(9)).join(' ')}`);
    for (const m of MEASUREMENTS) {
      for (const [name, vmm] of [
        ['ts-vmm', results.tsVmm],
        ['QEMU', results.qemu],
      ] as const) {
        out.push(
          `${m.padEnd(18)} ${name.padEnd(7)} ${columns
            .map(([, k]) =>
              med(vmm, m, (s) => s.perMiB[k])
                .toFixed(1)
                .padStart(9),
            )
            .join(' ')}`,
        );
      }
    }
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    for (const stop of stops) stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
