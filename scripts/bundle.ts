// Bundles the compiled modules under dist/src into dist/bundle, which bin/ts-vmm.js runs. Node's ES-module
// loader spends more per module resolving, reading and linking it than compiling it, and a run loads over a
// hundred modules before its guest starts; the bundle loads the same code from a few files.
//
// Every output lies flat in dist/bundle, so a module found at run time by `new URL('./name.js', import.meta.url)`
// (a worker's entry, a device module a thread imports by URL) is found there whichever chunk the code asking for
// it went into. Each such module is therefore an entry point here; test/structure/bundle.test.ts checks the list
// against the code. npm packages stay outside (koffi is a native module). meta.json records which compiled modules
// each output holds (esbuild's metafile), for bench/start-up.ts.
import { rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ENTRY_POINTS = [
  'cli/main.js',
  'kvm/vcpu-worker.js',
  'devices/serial.js',
  'virtio/interrupt-status.js',
  'virtio/io-thread-worker.js',
  'virtio/blk.js',
  'luks/xts-worker.js',
];

const compiled = fileURLToPath(new URL('../src/', import.meta.url));
const outdir = fileURLToPath(new URL('../bundle/', import.meta.url));

rmSync(outdir, { recursive: true, force: true });
const { metafile } = await build({
  entryPoints: ENTRY_POINTS.map((entry) => compiled + entry),
  outdir,
  entryNames: '[name]',
  chunkNames: 'chunk-[hash]',
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
});
writeFileSync(`${outdir}meta.json`, JSON.stringify(metafile));
