// Where the project's own files are: the nearest directory above this module with a package.json. The module runs
// compiled (dist/src/sys/) and bundled (dist/bundle/), at different depths below the root.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

export function projectRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}: the project's files cannot be found`);
    dir = parent;
  }
  root = dir;
  return root;
}

/** A file of the project's, by its path from the project root. */
export const projectFile = (...parts: string[]): string => join(projectRoot(), ...parts);

/** The command-line entry point, for starting ts-vmm as a child process. */
export const cliEntry = (): string => projectFile('bin', 'ts-vmm.js');
