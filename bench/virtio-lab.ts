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
//   VIRTIO_LAB_ONLY=vsock-to-guest node dist/bench/virtio-lab.js 10   (some of the measurements only)
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
/** A boot that prints nothing for this long is stalled: the bench says where, then ends it. */
const STALL_MS = 120_000;
const KVM_STATS = '/sys/kernel/debug/kvm';
/** KVM's debugfs counters (summed over all VMs) read around each measurement. */
const COUNTERS = ['exits', 'mmio_exits', 'irq_injections'] as const;
type Counters = Record<(typeof COUNTERS)[number], number>;

const ALL_MEASUREMENTS = ['disk-write', 'disk-read', 'vsock-to-guest', 'vsock-from-guest'] as const;
type Measurement = (typeof ALL_MEASUREMENTS)[number];
/** VIRTIO_LAB_ONLY=a,b runs only those measurements (to chase one, e.g. a stall, in fewer minutes). */
const MEASUREMENTS = selectedMeasurements(process.env.VIRTIO_LAB_ONLY);

function selectedMeasurements(only: string | undefined): readonly Measurement[] {
  if (only === undefined) return ALL_MEASUREMENTS;
  const names = only.split(',');
  const unknown = names.filter((n) => !(ALL_MEASUREMENTS as readonly string[]).includes(n));
  if (unknown.length > 0) throw new Error(`VIRTIO_LAB_ONLY: ${unknown.join(', ') || 'nothing'} is not one of ${ALL_MEASUREMENTS.join(', ')}`);
  return ALL_MEASUREMENTS.filter((m) => names.includes(m));
}

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

/** One line per thread of `pid`: name, state, what it waits in, CPU ms over `ms`; and KVM's counter rates. */
async function describeStall(pid: number, ms: number): Promise<string> {
  const threads = (): Map<string, { line: string; cpu: number }> => {
    const out = new Map<string, { line: string; cpu: number }>();
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
        const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
        const wchan = fs.readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'latin1');
        const syscall = fs.readFileSync(`/proc/${pid}/task/${tid}/syscall`, 'latin1').trim().split(' ').slice(0, 3).join(' ');
        const name = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'latin1').trim();
        out.set(tid, { line: `${tid} ${name} state ${state} wchan ${wchan || '-'} syscall ${syscall}`, cpu: cpuTimes(`/proc/${pid}/task/${tid}/stat`).total });
      } catch {
        // the thread ended meanwhile
      }
    }
    return out;
  };
  const [before, counters] = [threads(), readCounters()];
  await new Promise((resolve) => setTimeout(resolve, ms));
  const [after, counters2] = [threads(), readCounters()];
  const lines = [...after].map(([tid, t]) => `  ${t.line}, ${(t.cpu - (before.get(tid)?.cpu ?? t.cpu)).toFixed(0)} ms CPU in ${ms} ms`);
  const rates = COUNTERS.map((c) => `${c} ${counters2[c] - counters[c]}`).join(', ');
  return `threads of ${pid}:\n${lines.join('\n')}\nKVM counters over ${ms} ms: ${rates}`;
}

/**
 * The guest's /init: each measurement is timed with the kernel's monotonic clock (`now at ... nsecs`
 * of /proc/timer_list; busybox's date has no sub-second format) and reported as
 * `bench <name> <start ns> <end ns> <bytes> (status <exit status>)`, announced by `bench-start <name>`; a
 * measurement that failed has no byte count, and its status and socat's complaint say why.
 */
function initScript(modules: readonly string[], diskMiB: number, vsockMiB: number): string {
  const blocks64k = vsockMiB * 16;
  const commands: Record<Measurement, string> = {
    'disk-write': `dd if=/dev/zero of=/dev/vda bs=1M count=${diskMiB} oflag=direct 2>/dev/null && echo ${diskMiB * 1048576}`,
    'disk-read': `dd if=/dev/vda of=/dev/null bs=1M count=${diskMiB} iflag=direct 2>/dev/null && echo ${diskMiB * 1048576}`,
    'vsock-to-guest': `socat -u VSOCK-CONNECT:2:${PORT.toGuest} - | wc -c`,
    'vsock-from-guest': `dd if=/dev/zero bs=64k count=${blocks64k} 2>/dev/null | socat -t 600 - VSOCK-CONNECT:2:${PORT.fromGuest}`,
  };
  return `
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
${modules.map((m) => `insmod /modules/${m}.ko`).join('\n')}
for i in $(seq 200); do [ -b /dev/vda ] && ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport | grep -q virtio && break; sleep 0.1; done
now() { sed -n '3{s/^now at \\([0-9]*\\) nsecs$/\\1/p;q}' /proc/timer_list; }
measure() { name=$1; shift; echo "bench-start $name"; t0=$(now); bytes=$(sh -c "$*"); status=$?; t1=$(now); echo "bench $name $t0 $t1 $bytes (status $status)"; }
${MEASUREMENTS.map((m) => `measure ${m} '${commands[m]}'`).join('\n')}
sleep 1 # the console's last lines (a failed measurement's status, socat's complaint) drain before power-off
poweroff -f
`;
}

function readCounters(): Counters {
  const c = {} as Counters;
  for (const name of COUNTERS) c[name] = Number(fs.readFileSync(path.join(KVM_STATS, name), 'utf8'));
  return c;
}

/** What one boot measured, and why it measured no more when it did not finish. */
interface GuestRun {
  samples: Map<Measurement, Sample>;
  failure?: string;
}

/**
 * Runs one VMM to its end, turning the guest's `bench` lines into samples. A boot silent for STALL_MS is
 * described (its threads, KVM's counters, `peers()`: the state of the host ends) and ended.
 */
function runGuest(command: string, args: readonly string[], peers: () => string): Promise<GuestRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const samples = new Map<Measurement, Sample>();
    let output = ''; // both streams, for the error message
    let stdout = '';
    let scanned = 0;
    let before: (Counters & Cpu) | undefined;
    const snapshot = (): Counters & Cpu => ({ ...readCounters(), ...readCpu(child.pid!) });
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    let heard = Date.now();
    /** Set once the boot is found silent: what the failure says first. */
    let stall = '';
    const watch = setInterval(() => {
      if (Date.now() - heard < STALL_MS || stall) return;
      stall = `silent for ${STALL_MS / 1000} s (ended while being described); `;
      void describeStall(child.pid!, 5000)
        .catch((e: Error) => `no description: ${e.message}`)
        .then((description) => {
          stall = `silent for ${STALL_MS / 1000} s, then ended; ${description}\nhost ends: ${peers()}\n`;
          child.kill('SIGKILL');
        });
    }, 5000);
    child.stdout.on('data', (d: Buffer) => {
      heard = Date.now();
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
      clearInterval(watch);
      const missing = MEASUREMENTS.filter((m) => !samples.has(m));
      const failure = missing.length > 0 ? `${stall}exited with ${status} before measuring ${missing.join(', ')}:\n${output.slice(-3000)}` : undefined;
      resolve({ samples, ...(failure ? { failure } : {}) });
    });
  });
}

/** ts-vmm's host end of vsock: Unix-socket listeners that send `bytes` and count what arrives. */
async function tsVmmVsockPeers(uds: string, bytes: number): Promise<{ stop: () => void; describe: () => string }> {
  const blob = Buffer.alloc(bytes);
  // The latest connection of each kind, for a stall's description.
  let sending: net.Socket | undefined;
  let receiving: { socket: net.Socket; bytes: number } | undefined;
  const toGuest = net.createServer((s) => {
    sending = s;
    s.on('error', () => {});
    s.end(blob);
  });
  const fromGuest = net.createServer({ allowHalfOpen: true }, (s) => {
    const counted = { socket: s, bytes: 0 };
    receiving = counted;
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      counted.bytes += d.length;
    });
    s.on('end', () => s.end(`${counted.bytes}\n`));
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
  return {
    stop: () => {
      toGuest.close();
      fromGuest.close();
    },
    describe: () =>
      [
        sending
          ? `to the guest: ${sending.bytesWritten - sending.writableLength} of ${bytes} bytes taken by ts-vmm${sending.destroyed ? ', closed' : ''}`
          : 'no connection to send on',
        receiving ? `from the guest: ${receiving.bytes} bytes${receiving.socket.readableEnded ? ', ended' : ''}` : 'no connection to receive on',
      ].join('; '),
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
    const tsVmmPeers = await tsVmmVsockPeers(uds, vsockMiB << 20);
    stops.push(tsVmmPeers.stop);
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
    // A boot that ends early (QEMU's guest has reset in the middle of a vsock transfer in the lab) keeps
    // what it measured; the rounds go on, and the report names every failure and how many samples each
    // median has.
    const failures: string[] = [];
    const keep = (vmm: Map<Measurement, Sample>[], label: string, round: number, run: GuestRun, context = ''): void => {
      vmm.push(run.samples);
      if (run.failure === undefined) return;
      failures.push(`${label}, round ${round}: ${run.failure}${context}`);
      process.stderr.write(`virtio-lab: ${label}, round ${round}: ${run.failure.split('\n')[0]}\n`);
    };
    // Interleaved, so drift in the host (other jobs, page cache) hits both alike.
    for (let i = 1; i <= runs; i++) {
      keep(results.tsVmm, 'ts-vmm', i, await runGuest(process.execPath, tsVmm, tsVmmPeers.describe));
      const peers = qemuVsockPeers(blob);
      const qemuLog = path.join(dir, `qemu-${i}.log`);
      try {
        const run = await runGuest('qemu-system-x86_64', [...qemu, '-d', 'cpu_reset,guest_errors', '-D', qemuLog], peers.log);
        const log = fs.existsSync(qemuLog) ? fs.readFileSync(qemuLog, 'latin1') : '';
        const context = `\nthe host's socat peers said:\n${peers.log().slice(-3000)}\nQEMU's log (-d cpu_reset,guest_errors), ${(log.match(/^CPU Reset/gm) ?? []).length} resets:\n${log.slice(-1500)}`;
        keep(results.qemu, 'QEMU', i, run, context);
      } finally {
        peers.stop();
      }
    }

    const values = (vmm: Map<Measurement, Sample>[], m: Measurement, f: (s: Sample) => number): number[] =>
      vmm.flatMap((r) => {
        const s = r.get(m);
        return s ? [f(s)] : [];
      });
    const med = (vmm: Map<Measurement, Sample>[], m: Measurement, f: (s: Sample) => number): number => median(values(vmm, m, f));
    const out: string[] = [
      `virtio throughput in the guest, median of ${runs} unless a count says otherwise (disk ${diskMiB} MiB, vsock ${vsockMiB} MiB)`,
      `${'measurement'.padEnd(18)} ${'ts-vmm MB/s'.padStart(12)} ${'QEMU MB/s'.padStart(12)} ${'ratio'.padStart(7)}`,
    ];
    let unmeasured = false;
    for (const m of MEASUREMENTS) {
      const counts = [results.tsVmm, results.qemu].map((vmm) => values(vmm, m, (s) => s.mbPerSecond).length);
      if (counts.includes(0)) {
        unmeasured = true;
        out.push(`${m.padEnd(18)} not measured by ${counts[0] === 0 ? 'ts-vmm' : 'QEMU'} in any round`);
        continue;
      }
      const a = med(results.tsVmm, m, (s) => s.mbPerSecond);
      const b = med(results.qemu, m, (s) => s.mbPerSecond);
      const note = counts.some((n) => n < runs) ? `  (samples: ts-vmm ${counts[0]}, QEMU ${counts[1]})` : '';
      out.push(`${m.padEnd(18)} ${a.toFixed(2).padStart(12)} ${b.toFixed(2).padStart(12)} ${(a / b).toFixed(3).padStart(7)}${note}`);
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
      if ([results.tsVmm, results.qemu].some((vmm) => values(vmm, m, (s) => s.mbPerSecond).length === 0)) continue;
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
    if (failures.length > 0) out.push('', `runs that ended early (${failures.length}):`, ...failures);
    process.stdout.write(`${out.join('\n')}\n`);
    if (unmeasured) process.exitCode = 1;
  } finally {
    for (const stop of stops) stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
