// Where the project's own files are: this module is compiled to dist/src/sys/, three levels below the root.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const projectRoot = (): string => fileURLToPath(new URL('../../../', import.meta.url));

/** A file of the project's, by its path from the project root. */
export const projectFile = (...parts: string[]): string => join(projectRoot(), ...parts);

/** The command-line entry point, for starting ts-vmm as a child process. */
export const cliEntry = (): string => projectFile('bin', 'ts-vmm.js');
