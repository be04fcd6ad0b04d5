// Container engines to the workload's first output with ts-vmm as their OCI runtime, against the same engine with
// runc, on the same busybox image, interleaved, medians of N: `ctr run --rm` (containerd 1.6 through its runc
// shim) and `podman run --rm` (through conmon). Each runtime runs behind a wrapper that logs every verb's start and
// end, which splits the time to first output into the engine's own work before `create`, `create`, the engine
// between `create` and `start`, `start`, and `start` to the first output.
//   npm run build && node dist/bench/engines.js [runs]      (as root; in the lab where there is no /dev/kvm)
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBusybox } from '../src/assets/debian.js';
import { writeBusyboxRootfs } from '../src/oci/example-rootfs.js';
import { findProgram } from '../src/oci/host-programs.js';
import { errorMessage } from '../src/sys/error-message.js';
import { importImage, podmanCommand, podmanImport, startContainerd, writeRuntimeWrapper } from '../test/oci/engines.js';
import { median, timeToOutput } from './measure.js';

const runs = Number(process.argv[2] ?? 5);
const MARKER = 'first output';
const VERBS = new Set(['create', 'start', 'delete', 'kill', 'state', 'ps', 'features']);

interface Phases {
  firstOutput: number;
  total: number;
  beforeCreate: number;
  create: number;
  betweenCreateAndStart: number;
  start: number;
  startToFirstOutput: number;
}

const uptime = (): number => Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);

/** One timed run; the runtime's verb log (truncated first) gives the phases, in ms. */
async function timed(argv: string[], verbLog: string): Promise<Phases> {
  writeFileSync(verbLog, '');
  const spawnedAt = uptime();
  const sample = await timeToOutput(argv[0]!, argv.slice(1), process.env, MARKER, 600_000);
  const calls = readFileSync(verbLog, 'utf8');
  const verbs = calls
    .trim()
    .split('\n')
    .map((line) => {
      const [start, end, status, ...args] = line.split(' ');
      const verb = args.find((a) => VERBS.has(a));
      // A late kill of a container that already exited may fail, as runc's does; create and start may not.
      if (status !== '0' && (verb === 'create' || verb === 'start')) throw new Error(`the runtime's ${verb} failed (exit status ${status})`);
      return { verb, start: (Number(start) - spawnedAt) * 1000, end: (Number(end) - spawnedAt) * 1000 };
    });
  const create = verbs.find((v) => v.verb === 'create');
  const start = verbs.find((v) => v.verb === 'start');
  if (!create || !start) throw new Error(`no create and start in the runtime's calls:\n${calls}`);
  return {
    firstOutput: sample.firstOutputMs,
    total: sample.totalMs,
    beforeCreate: create.start,
    create: create.end - create.start,
    betweenCreateAndStart: start.start - create.end,
    start: start.end - start.start,
    startToFirstOutput: sample.firstOutputMs - start.end,
  };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the engines run containers as root: run this as root');
  const runc = findProgram('runc');
  if (runc === undefined) throw new Error('runc not found: it is the peer runtime (Debian: runc)');
  const dir = mkdtempSync(join(tmpdir(), 'ts-vmm-engines-bench-'));
  const containerd = await startContainerd(dir, 'containerd', 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n');
  try {
    const rootfs = join(dir, 'rootfs');
    await writeBusyboxRootfs((await ensureBusybox()).path, rootfs);
    const verbLog = join(dir, 'verbs.log');
    const runtimes = { 'ts-vmm': join(dir, 'ts-vmm'), runc: join(dir, 'runc') };
    writeRuntimeWrapper(runtimes['ts-vmm'], { verbLog });
    // runc creates without pivot_root: in the lab the root is the initramfs, where pivot_root fails. Neither engine
    // can ask for it without changing what it runs (ctr's --no-pivot drops --runc-binary), so a script adds it.
    const runcNoPivot = join(dir, 'runc-no-pivot');
    writeFileSync(
      runcNoPivot,
      `#!/bin/sh\nfor a; do shift; if [ "$a" = create ]; then set -- "$@" create --no-pivot; else set -- "$@" "$a"; fi; done\nexec '${runc}' "$@"\n`,
      { mode: 0o755 },
    );
    writeRuntimeWrapper(runtimes.runc, { program: runcNoPivot, verbLog });
    const ctrImage = 'docker.io/library/ts-vmm-bench:1';
    await importImage(containerd, 'bench', rootfs, ctrImage, dir);
    const podmanImage = 'localhost/ts-vmm-bench:1';
    await podmanImport(podmanCommand(dir, runtimes.runc), rootfs, podmanImage, dir);

    const workload = ['sh', '-c', `echo ${MARKER}`];
    let serial = 0;
    const commands: Record<string, () => string[]> = {};
    for (const [name, wrapper] of Object.entries(runtimes)) {
      commands[`ctr run --rm, ${name}`] = () => [
        ...containerd.ctr('bench'),
        'run',
        '--rm',
        '--snapshotter',
        'native',
        '--runc-binary',
        wrapper,
        ctrImage,
        `bench-${serial++}`,
        ...workload,
      ];
      commands[`podman run --rm, ${name}`] = () => [...podmanCommand(dir, wrapper), 'run', '--rm', '--network', 'none', podmanImage, ...workload];
    }
    const samples = new Map<string, Phases[]>(Object.keys(commands).map((name) => [name, []]));
    for (let round = 1; round <= runs; round++)
      for (const [name, command] of Object.entries(commands)) {
        process.stderr.write(`engines: round ${round}/${runs}: ${name}\n`);
        samples.get(name)!.push(await timed(command(), verbLog));
      }

    const columns: (keyof Phases)[] = ['firstOutput', 'total', 'beforeCreate', 'create', 'betweenCreateAndStart', 'start', 'startToFirstOutput'];
    const heads = ['first output', 'exit', 'engine before create', 'create', 'engine between', 'start', 'start to output'];
    console.log(`container engines, time to the workload's first output (ms, medians of ${runs})\n`);
    console.log(`| run | ${heads.join(' | ')} |\n|---|${heads.map(() => '---:').join('|')}|`);
    const medians = new Map<string, Phases>();
    for (const [name, list] of samples) {
      const m = Object.fromEntries(columns.map((c) => [c, median(list.map((p) => p[c]))])) as unknown as Phases;
      medians.set(name, m);
      console.log(`| ${name} | ${columns.map((c) => m[c].toFixed(0)).join(' | ')} |`);
    }
    for (const engine of ['ctr run --rm', 'podman run --rm']) {
      const ts = medians.get(`${engine}, ts-vmm`)!;
      const runc = medians.get(`${engine}, runc`)!;
      console.log(
        `\n${engine}: ts-vmm / runc to first output ${(ts.firstOutput / runc.firstOutput).toFixed(2)}x, to exit ${(ts.total / runc.total).toFixed(2)}x`,
      );
    }
  } finally {
    await containerd.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(`engines bench: ${errorMessage(error)}`);
  process.exit(1);
});
