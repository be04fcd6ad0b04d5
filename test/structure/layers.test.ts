// The folder tree is the architecture: docs/ARCHITECTURE.md names the layers of src/, lowest first, and a
// module may import only from its own folder or a folder below it. This test holds the code to that line.
import { expect } from 'chai';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { projectFile } from '../../src/sys/project-paths.js';
import { RELATIVE_IMPORT, filesUnder } from './source-files.js';

const LAYERS_LINE = /^Layers, lowest first: (.+)$/m;

/** Every import between two folders of src/, as `from -> to` with the importing file. */
function folderImports(src: string): { from: string; to: string; file: string }[] {
  return filesUnder(src, '.ts')
    .flatMap((file) => {
      const from = relative(src, file).split('/')[0] ?? '';
      return [...readFileSync(file, 'utf8').matchAll(RELATIVE_IMPORT)].map((m) => {
        const target = relative(src, resolve(dirname(file), m[1] ?? ''));
        return { from, to: target.startsWith('..') ? target : (target.split('/')[0] ?? ''), file: relative(src, file) };
      });
    })
    .filter(({ from, to }) => from !== to);
}

describe('the layers of src/', () => {
  const src = projectFile('src');
  const layers = LAYERS_LINE.exec(readFileSync(projectFile('docs', 'ARCHITECTURE.md'), 'utf8'))?.[1]?.split(' · ') ?? [];

  it('docs/ARCHITECTURE.md names every folder of src/ exactly once', () => {
    const folders = readdirSync(src).filter((entry) => statSync(join(src, entry)).isDirectory() && filesUnder(join(src, entry), '.ts').length > 0);
    expect([...layers].sort()).to.deep.equal(folders.sort());
  });

  it('imports only go down: from a folder to one named before it, never out of src/ (test code stays in test/)', () => {
    const rank = new Map(layers.map((layer, i) => [layer, i]));
    const upward = folderImports(src)
      .filter(({ from, to }) => !(rank.has(to) && (rank.get(to) ?? 0) < (rank.get(from) ?? -1)))
      .map(({ from, to, file }) => `${file}: ${from} -> ${to}`);
    expect(upward).to.deep.equal([]);
  });
});
