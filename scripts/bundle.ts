// Bundles the compiled modules under dist/src into dist/bundle, which bin/ts-vmm.js runs. Node's ES-module
// loader spends more per module resolving, reading and linking it than compiling it, and a run loads over a
// hundred modules before its guest starts; the bundle loads the same code from a few files.
//
// Every output lies flat in dist/bundle, so a module found at run time by `new URL('./name.js', import.meta.url)`
// (a worker's entry, a device module a thread imports by URL) is found there whichever chunk the code asking for
// it went into. Each such module is therefore an entry point of its own; test/structure/bundle.test.ts checks the
// list against the code. Those modules only ever run in worker threads, so they are bundled apart from the
// command's entry: a worker then loads the few chunks the thread side shares (a vCPU thread 11 files instead of
// 17, which took a tenth off its start and 0.9 MiB off its memory), and the main thread never loads a second copy
// of anything. npm packages stay outside (koffi is a native module). meta.json records which compiled modules
// each output holds (esbuild's metafile, both builds), for bench/start-up.ts.
import { rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type BuildOptions, type Metafile, build } from 'esbuild';

const COMMAND_ENTRY = 'cli/main.js';
/**
 * Modules found by URL, each run in a worker thread: a worker's entry, or a device module a worker imports. One
 * build for all of them, so a thread holds one copy of each module whichever of them it imports (koffi's type
 * names are unique per JavaScript context).
 */
const THREAD_ENTRIES = [
  'kvm/vcpu-worker.js',
  'devices/serial.js',
  'virtio/interrupt-status.js',
  'virtio/io-thread-worker.js',
  'virtio/blk.js',
  'luks/xts-worker.js',
];
/** The thread side's chunks are named apart from the command's. */
const THREAD_CHUNK_PREFIX = 'thread-';

const compiled = fileURLToPath(new URL('../src/', import.meta.url));
const outdir = fileURLToPath(new URL('../bundle/', import.meta.url));

const common: BuildOptions = {
  outdir,
  entryNames: '[name]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  // Class names are data here: a threaded device is looked up in its module by its class's name.
  keepNames: true,
  logLevel: 'warning',
  metafile: true,
};

rmSync(outdir, { recursive: true, force: true });
const builds = await Promise.all([
  build({ ...common, entryPoints: [compiled + COMMAND_ENTRY], chunkNames: 'chunk-[hash]' }),
  build({ ...common, entryPoints: THREAD_ENTRIES.map((entry) => compiled + entry), chunkNames: `${THREAD_CHUNK_PREFIX}[hash]` }),
]);
const metafile: Metafile = { inputs: {}, outputs: {} };
for (const { metafile: m } of builds) {
  Object.assign(metafile.inputs, m?.inputs);
  Object.assign(metafile.outputs, m?.outputs);
}
writeFileSync(`${outdir}meta.json`, JSON.stringify(metafile));
