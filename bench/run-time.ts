// Time from process start to the workload's first output for `ts-vmm run examples/hello`, cold (empty run cache:
// the guest agent, initramfs base and root disk are built) and warm (all cached), next to QEMU microvm booting the
// same kernel, the same initramfs base and the same root disk, in the same run, in interleaved rounds. QEMU has no vsock on hosts without
// vhost-vsock, so its guest runs the workload from /init with output on the serial console; the time to the first
// byte of that output is the peer's number. Medians of N runs. The ts-vmm runs also print `--timings`: the run's
// timeline, each step's median time since ts-vmm started, for the cold and the warm runs. At the first output, the
// resident memory beyond guest RAM of the warm run's process (the VM runs inside it) and of QEMU is read too.
//   npm run build && node dist/bench/run-time.js [runs]
// Needs /dev/kvm, qemu-system-x86_64, and `ts-vmm setup` done (kernel and busybox cached).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureBusybox } from '../src/assets/debian.js';
import { writeInitramfs } from '../src/initramfs/builder.js';
import { readBundleConfig, type BundleConfig } from '../src/oci/bundle-config.js';
import { ensureGuestAgent } from '../src/oci/guest-agent.js';
import { GUEST, initScript, shellQuote } from '../src/oci/guest-init.js';
import { ensureBaseInitramfs } from '../src/oci/guest-initramfs.js';
import { chooseKernel } from '../src/oci/kernel-choice.js';
import { runCacheDir } from '../src/oci/paths.js';
import { prepareRootDisk } from '../src/oci/root-disk.js';
import { RUN_CMDLINE } from '../src/oci/vm-request.js';
import { errorMessage } from '../src/sys/error-message.js';
import { ramRanges } from '../src/boot/layout.js';
import { overheadKiB } from './boot-sample.js';
import { median, timeToOutput, type OutputSample } from './measure.js';

const runs = Number(process.argv[2] ?? 5);
const project = fileURLToPath(new URL('../../', import.meta.url));
const bundle = join(project, 'examples', 'hello');
const MARKER = 'Hello from';

type Sample = OutputSample;

let failedRuns = 0;

/** timeToOutput, retried up to twice: a run that fails is counted and reported, not silently dropped. */
async function sample(command: string, args: string[], env: NodeJS.ProcessEnv, marker: string, guestRamKiB?: number[]): Promise<Sample> {
  const memory = guestRamKiB && ((pid: number) => overheadKiB(pid, guestRamKiB));
  for (let attempt = 1; ; attempt++) {
    try {
      return await timeToOutput(command, args, env, marker, undefined, memory);
    } catch (e) {
      failedRuns++;
      console.log(`run failed (${attempt}/3): ${errorMessage(e).split('\n').slice(0, 4).join(' | ')}`);
      if (attempt === 3) throw e;
    }
  }
}

/** The median time of each `--timings` step over the runs, in the order the steps came. */
function timeline(name: string, samples: Sample[]): void {
  const steps = new Map<string, number[]>();
  for (const s of samples) {
    for (const m of s.stderr.matchAll(/^ts-vmm: timings: +(\d+) ms {2}(.+)$/gm)) {
      const times = steps.get(m[2]!) ?? [];
      times.push(Number(m[1]));
      steps.set(m[2]!, times);
    }
  }
  console.log(`\n${name}: the run's timeline (median ms since ts-vmm started, of ${samples.length} runs)`);
  for (const [step, times] of [...steps].sort((a, b) => median(a[1]) - median(b[1]))) {
    console.log(`${median(times).toFixed(0).padStart(8)}  ${step}${times.length < samples.length ? ` (in ${times.length} runs)` : ''}`);
  }
}

function summary(name: string, samples: Sample[]): { name: string; first: number; total: number } {
  const first = median(samples.map((s) => s.firstOutputMs));
  const total = median(samples.map((s) => s.totalMs));
  console.log(`${name.padEnd(34)} first output ${first.toFixed(0).padStart(6)} ms   exit ${total.toFixed(0).padStart(6)} ms   (median of ${samples.length})`);
  return { name, first, total };
}

/** The QEMU guest: ts-vmm's initramfs base and read-only root disk, with an /init that runs the workload itself. */
async function peerGuest(dir: string): Promise<{ config: BundleConfig; kernel: string; initrd: string; disk: string }> {
  mkdirSync(dir, { recursive: true });
  const config = readBundleConfig(bundle);
  const kernel = await chooseKernel({}, {});
  const agent = await ensureGuestAgent(runCacheDir());
  const busybox = (await ensureBusybox()).path;
  const base = await ensureBaseInitramfs({ modulesDir: kernel.modulesDir, busybox, agent }, runCacheDir());
  const disk = await prepareRootDisk(config, { cacheDir: runCacheDir() });
  const run =
    `${GUEST.busybox} chroot ${GUEST.newRoot} /bin/env -i ${[...config.process.env, ...config.process.args].map(shellQuote).join(' ')}\n` +
    `${GUEST.busybox} poweroff -f`;
  const init = initScript(config, base.moduleFiles).replace(/^exec .*$/m, () => run);
  const runPart = join(dir, 'run.cpio');
  await writeInitramfs(runPart, 'none', (image) => image.file('init', new TextEncoder().encode(init), { mode: 0o755 }));
  const initrd = join(dir, 'initrd');
  writeFileSync(initrd, Buffer.concat([readFileSync(base.path), readFileSync(runPart)]));
  return { config, kernel: kernel.vmlinuz, initrd, disk: disk.path };
}

const scratch = mkdtempSync(join(tmpdir(), 'ts-vmm-run-bench-'));
const tsVmm = [join(project, 'bin', 'ts-vmm.js'), 'run', '--timings', bundle];
try {
  const warmEnv = { ...process.env, TS_VMM_RUN_CACHE: join(scratch, 'warm'), TS_VMM_STATE: join(scratch, 'state-warm') };
  await sample(process.execPath, tsVmm, warmEnv, MARKER);
  const memoryMiB = readBundleConfig(bundle).vm.memoryMiB;
  const tsVmmRamKiB = ramRanges(memoryMiB * 1024 * 1024).map((r) => r.size / 1024);

  // The peer: same kernel, initramfs base and disk as the warm ts-vmm runs; its /init runs the workload itself.
  process.env.TS_VMM_RUN_CACHE = warmEnv.TS_VMM_RUN_CACHE;
  const peer = await peerGuest(join(scratch, 'peer'));
  const qemuArgs = [
    '-M',
    'microvm,acpi=on',
    '-enable-kvm',
    '-cpu',
    'host',
    '-m',
    String(peer.config.vm.memoryMiB),
    '-smp',
    String(peer.config.vm.cpus),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-serial',
    'stdio',
    '-kernel',
    peer.kernel,
    '-initrd',
    peer.initrd,
    '-append',
    RUN_CMDLINE,
    '-drive',
    `id=root,file=${peer.disk},format=raw,if=none,readonly=on`,
    '-device',
    'virtio-blk-device,drive=root',
  ];
  const cold: Sample[] = [];
  const warm: Sample[] = [];
  const qemu: Sample[] = [];
  // Interleaved rounds: the lab's speed drifts by seconds over minutes, and the drift must hit all three alike.
  // The order turns each round: a run slowed by what the run before it left behind (a cold run's writes still
  // going to disk, say) is a different one each time.
  for (let i = 0; i < runs; i++) {
    const coldEnv = { ...process.env, TS_VMM_RUN_CACHE: join(scratch, `cold-${i}`), TS_VMM_STATE: join(scratch, `state-cold-${i}`) };
    const round = [
      async () => cold.push(await sample(process.execPath, tsVmm, coldEnv, MARKER)),
      async () => warm.push(await sample(process.execPath, tsVmm, warmEnv, MARKER, tsVmmRamKiB)),
      async () => qemu.push(await sample('qemu-system-x86_64', qemuArgs, process.env, MARKER, [memoryMiB * 1024])),
    ];
    for (let k = 0; k < round.length; k++) await round[(i + k) % round.length]!();
  }

  console.log(`\nts-vmm run ${bundle} vs QEMU microvm, same kernel, initramfs base and disk; ${runs} runs each`);
  const c = summary('ts-vmm run, cold (empty run cache)', cold);
  const w = summary('ts-vmm run, warm', warm);
  const q = summary('QEMU microvm (KVM), same guest', qemu);
  console.log(`\nratio to QEMU, first output: cold ${(c.first / q.first).toFixed(2)}x, warm ${(w.first / q.first).toFixed(2)}x`);
  const paired = (samples: Sample[]): string => median(samples.map((s, i) => s.firstOutputMs / qemu[i]!.firstOutputMs)).toFixed(2);
  console.log(`median of the rounds' own ratios: cold ${paired(cold)}x, warm ${paired(warm)}x`);
  const memory = (samples: Sample[]): number => median(samples.map((s) => s.atMarker!)) / 1024;
  console.log(
    `resident memory beyond guest RAM at the first output: ts-vmm run (warm) ${memory(warm).toFixed(1)} MiB, QEMU ${memory(qemu).toFixed(1)} MiB, ratio ${(memory(warm) / memory(qemu)).toFixed(2)}x`,
  );
  console.log(`failed runs (retried): ${failedRuns}`);
  timeline('ts-vmm run, cold', cold);
  timeline('ts-vmm run, warm', warm);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
