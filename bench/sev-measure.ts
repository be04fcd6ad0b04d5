// Launch-digest throughput: ts-vmm measuring a 64 MiB initrd plus an 8 MiB kernel in guest memory through
// the measured-launch path on sev-sim (LAUNCH_UPDATE_DATA per region, then LAUNCH_MEASURE), against
// coreutils `sha256sum` over the same bytes in a file, in the same run. Reported as a throughput ratio
// (ts-vmm / sha256sum; >= 0.9 is the target). Both digests are compared so the two did the same work.
//   node dist/bench/sev-measure.js [runs]
import { spawnSync } from 'node:child_process';
import { randomFillSync, createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { measuredLaunch, launchDigest, measuredRanges, type PlacedRegion } from '../src/sev/launch.js';
import { SevSimulator, SimulatedPlatform } from '../src/sev/sev-sim.js';
import { SimulatedIdentity } from '../src/sev/sim-identity.js';

const MiB = 0x10_0000;
const runs = Number(process.argv[2] ?? 5);

const kernel = randomFillSync(Buffer.alloc(8 * MiB));
const initrd = randomFillSync(Buffer.alloc(64 * MiB));
const memory = GuestMemory.shared([{ guestAddress: 0, size: 128 * MiB }]);
const regions: PlacedRegion[] = [
  { kind: 'kernel', guestAddress: 16 * MiB, length: kernel.length },
  { kind: 'initrd', guestAddress: 32 * MiB, length: initrd.length },
];
memory.write(16 * MiB, kernel);
memory.write(32 * MiB, initrd);

const dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-bench-'));
const file = path.join(dir, 'kernel+initrd');
writeFileSync(file, Buffer.concat([kernel, initrd]));

const platform = new SimulatedPlatform(SimulatedIdentity.generate({ caBits: 2048 }));
const expected = createHash('sha256').update(kernel).update(initrd).digest('hex');
if (launchDigest(memory, measuredRanges(regions, memory)).toString('hex') !== expected) throw new Error('the measured ranges are not the placed bytes');

async function tsVmm(): Promise<number> {
  const backend = new SevSimulator(platform, { warn: () => undefined });
  const start = performance.now();
  await measuredLaunch({ backend, image: { memory, regions }, policy: 0 });
  return performance.now() - start;
}

function sha256sum(): number {
  const start = performance.now();
  const r = spawnSync('sha256sum', [file], { encoding: 'utf8' });
  const elapsed = performance.now() - start;
  if (r.status !== 0) throw new Error(`sha256sum failed: ${r.stderr || r.error?.message}`);
  if (!r.stdout.startsWith(expected)) throw new Error('sha256sum disagrees with the launch digest');
  return elapsed;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ours: number[] = [];
const theirs: number[] = [];
try {
  sha256sum(); // warm the page cache
  for (let i = 0; i < runs; i++) {
    ours.push(await tsVmm());
    theirs.push(sha256sum());
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const bytes = kernel.length + initrd.length;
const mbps = (ms: number) => (bytes / MiB / (ms / 1000)).toFixed(0);
console.log(`sev-measure: ${bytes / MiB} MiB (8 MiB kernel + 64 MiB initrd), median of ${runs} runs`);
console.log(`  ts-vmm sev-sim launch digest  ${median(ours).toFixed(1)} ms  ${mbps(median(ours))} MiB/s`);
console.log(`  sha256sum                     ${median(theirs).toFixed(1)} ms  ${mbps(median(theirs))} MiB/s`);
console.log(`  ratio (ts-vmm / sha256sum throughput): ${(median(theirs) / median(ours)).toFixed(2)}`);
