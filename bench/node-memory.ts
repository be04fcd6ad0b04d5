// What Node.js itself costs in resident memory, before any VMM code: a process that has started (`node -e 0`'s
// state), then after each of four idle worker threads (a ts-vmm VM has one per vCPU, one per disk's I/O thread and
// the eventfd poller), and after koffi is loaded. Read from /proc/self/smaps_rollup in a child of its own, medians
// of N, next to which the VMM's own figures in docs/PERFORMANCE.md can be read.
//   npm run build && node dist/bench/node-memory.js [runs=5]
import { spawnSync } from 'node:child_process';
import { median } from './measure.js';

const runs = Number(process.argv[2] ?? 5);
const WORKERS = 4;

// The child prints its resident KiB at each step, one per line.
const child = `
const { readFileSync } = require('node:fs');
const { Worker } = require('node:worker_threads');
const rss = () => console.log(/^Rss: +(\\d+) kB$/m.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))[1]);
const settle = () => new Promise((resolve) => setTimeout(resolve, 200));
(async () => {
  await settle(); rss();
  for (let i = 0; i < ${WORKERS}; i++) {
    const worker = new Worker('setInterval(() => {}, 1000)', { eval: true });
    await new Promise((resolve) => worker.once('online', resolve));
    await settle(); rss();
  }
  require('koffi'); await settle(); rss();
  process.exit(0);
})();`;

const steps = ['Node.js started', ...Array.from({ length: WORKERS }, (_, i) => `${i + 1} idle worker thread${i ? 's' : ''}`), 'koffi loaded'];
const samples: number[][] = steps.map(() => []);
for (let i = 0; i < runs; i++) {
  const result = spawnSync(process.execPath, ['-e', child], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`the measuring child failed (${result.status}): ${result.stderr.trim()}`);
  for (const [step, kib] of result.stdout.trim().split('\n').entries()) samples[step]!.push(Number(kib));
}
const mib = (kib: number): string => (kib / 1024).toFixed(1);
steps.forEach((step, i) => {
  const added = i === 0 ? '' : `  (+${mib(median(samples[i]!) - median(samples[i - 1]!))})`;
  console.log(`${step.padEnd(24)} ${mib(median(samples[i]!)).padStart(6)} MiB${added}`);
});
const perWorker = (median(samples[WORKERS]!) - median(samples[0]!)) / WORKERS;
console.log(`per idle worker thread: ${mib(perWorker)} MiB (median of ${runs} runs)`);
