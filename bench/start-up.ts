// What a `ts-vmm run` pays before its VM starts for loading its code: a Node.js process that imports the command
// `run` and the VMM (src/cli/run.ts, src/cli/boot-machine.ts), from the bundle bin/ts-vmm.js runs
// (scripts/bundle.ts) and from the compiled modules it is made of (dist/src), next to `node -e 0`; interleaved,
// medians and quartiles of N; and koffi loaded both ways. Under TCG (the lab) module loading is a large part of a run's own start.
//   npm run build && node dist/bench/start-up.js [runs=20]
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { projectFile, projectRoot } from '../src/sys/project-paths.js';
import { median } from './measure.js';

const runs = Number(process.argv[2] ?? 20);
const LOADED = ['dist/src/cli/run.js', 'dist/src/cli/boot-machine.js'];

/** The bundle's outputs that hold each of the modules, found in esbuild's metafile. */
function bundleOutputs(): string[] {
  const meta = JSON.parse(readFileSync(projectFile('dist', 'bundle', 'meta.json'), 'utf8')) as { outputs: Record<string, { inputs: Record<string, unknown> }> };
  return LOADED.map((module) => {
    const output = Object.entries(meta.outputs).find(([, o]) => module in o.inputs)?.[0];
    if (output === undefined) throw new Error(`the bundle holds no ${module}: build first (npm run build)`);
    return projectFile(output);
  });
}

const importing = (files: string[]): string[] => ['--input-type=module', '-e', files.map((f) => `await import(${JSON.stringify(f)});`).join(' ')];
const cases: Record<string, string[]> = {
  'node -e 0': ['-e', '0'],
  // How every thread loads koffi (src/sys/koffi.ts): a require, not an ES-module import of the CommonJS package.
  'koffi, ES-module import': ['--input-type=module', '-e', "await import('koffi');"],
  'koffi, require': ['-e', "require('koffi');"],
  'compiled modules (dist/src)': importing(LOADED.map((m) => projectFile(m))),
  'bundle (dist/bundle)': importing(bundleOutputs()),
};

const times = new Map<string, number[]>();
for (let round = 0; round < runs; round++) {
  for (const [name, args] of Object.entries(cases)) {
    const started = performance.now();
    const result = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: projectRoot() });
    if (result.status !== 0) throw new Error(`${name}: exit status ${result.status}: ${result.stderr.trim()}`);
    times.set(name, [...(times.get(name) ?? []), performance.now() - started]);
  }
}
const quartile = (xs: number[], q: number): number => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))]!;
for (const [name, xs] of times) {
  console.log(
    `${name.padEnd(30)} ${median(xs).toFixed(0).padStart(6)} ms  (quartiles ${quartile(xs, 0.25).toFixed(0)}–${quartile(xs, 0.75).toFixed(0)}, ${xs.length} runs)`,
  );
}
const beyondNode = (name: string): number => median(times.get(name)!) - median(times.get('node -e 0')!);
const [compiled, bundled] = [beyondNode('compiled modules (dist/src)'), beyondNode('bundle (dist/bundle)')];
console.log(`loading beyond node -e 0: bundle ${bundled.toFixed(0)} ms, compiled modules ${compiled.toFixed(0)} ms, ratio ${(bundled / compiled).toFixed(2)}`);
const [imported, required] = [beyondNode('koffi, ES-module import'), beyondNode('koffi, require')];
console.log(`koffi beyond node -e 0: require ${required.toFixed(0)} ms, ES-module import ${imported.toFixed(0)} ms, ratio ${(required / imported).toFixed(2)}`);
