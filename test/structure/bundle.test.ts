// bin/ts-vmm.js runs the bundle (scripts/bundle.ts), not the compiled modules the other tests load: these tests hold
// the bundle to the code. A module found at run time by URL must be an entry of its own, or the bundle would
// start a worker or import a device from a file that does not exist.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cliEntry, projectFile } from '../../src/sys/project-paths.js';
import { RELATIVE_IMPORT, filesUnder } from './source-files.js';

const FOUND_BY_URL = /new URL\('\.\/([^'/]+\.js)', import\.meta\.url\)/g;

describe('the bundle bin/ts-vmm.js runs', () => {
  const bundle = projectFile('dist', 'bundle');

  /** The modules the code finds at run time by URL: what the threads run. */
  const foundByUrl = (): Set<string> =>
    new Set(filesUnder(projectFile('dist', 'src'), '.js').flatMap((file) => [...readFileSync(file, 'utf8').matchAll(FOUND_BY_URL)].map((m) => m[1]!)));

  it('has an entry for every module the code finds by URL', () => {
    const wanted = foundByUrl();
    expect([...wanted]).to.include.members(['vcpu-worker.js', 'io-thread-worker.js', 'blk.js', 'interrupt-status.js', 'serial.js']);
    const built = new Set(readdirSync(bundle));
    expect([...wanted].filter((name) => !built.has(name))).to.deep.equal([]);
  });

  it('exports what the threads look up by name in the device modules', () => {
    // In a process of its own: koffi's type names are per process, and this one has loaded the compiled modules.
    const url = (name: string) => JSON.stringify(pathToFileURL(join(bundle, name)).href);
    const script = `const blk = await import(${url('blk.js')}); const interrupts = await import(${url('interrupt-status.js')});
      const serial = await import(${url('serial.js')});
      console.log(JSON.stringify([blk.VirtioBlk?.name, typeof interrupts.localInterruptRegisters, typeof serial.localSerial]));`;
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(result.status, result.stderr).to.equal(0);
    expect(JSON.parse(result.stdout)).to.deep.equal(['VirtioBlk', 'function', 'function']);
  });

  it("keeps the threads' modules apart from the command's: each side loads only its own chunks", () => {
    const loads = (entry: string): string[] => {
      const seen = new Set<string>();
      const queue = [entry];
      for (let file = queue.pop(); file !== undefined; file = queue.pop()) {
        if (seen.has(file)) continue;
        seen.add(file);
        for (const m of readFileSync(join(bundle, file), 'utf8').matchAll(RELATIVE_IMPORT)) queue.push(m[1]!.replace(/^\.\//, ''));
      }
      return [...seen].filter((file) => file !== entry);
    };
    expect(loads('main.js').filter((file) => !file.startsWith('chunk-'))).to.deep.equal([]);
    for (const entry of foundByUrl())
      expect(
        loads(entry).filter((file) => !file.startsWith('thread-')),
        entry,
      ).to.deep.equal([]);
    expect(loads('vcpu-worker.js')).to.not.be.empty;
  });

  it('imports nothing outside itself but packages and Node', () => {
    const outside = readdirSync(bundle)
      .filter((file) => file.endsWith('.js'))
      .flatMap((file) => [...readFileSync(join(bundle, file), 'utf8').matchAll(RELATIVE_IMPORT)].map((m) => `${file}: ${m[1]}`))
      .filter((line) => !/: \.\/[^/]+\.js$/.test(line));
    expect(outside).to.deep.equal([]);
  });

  it('is what the command line runs', () => {
    expect(readFileSync(cliEntry(), 'utf8')).to.match(/from '\.\.\/dist\/bundle\/main\.js'/);
    const result = spawnSync(process.execPath, [cliEntry(), '--version'], { encoding: 'utf8' });
    expect(result.status, result.stderr).to.equal(0);
    expect(result.stdout).to.equal('0.1.0\n');
  });
});
