// Locates the public conformance data (copies of virtee/sev and sevctl test files) kept outside the
// repository in ../shared/vectors. Tests that use it are skipped when it is absent; self-made data covers
// the same code in every run.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function findRepoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('repository root (package.json) not found above the test file');
    dir = up;
  }
  return dir;
}

export const repoRoot = findRepoRoot();
export const vectorsDir = path.resolve(repoRoot, '..', 'shared', 'vectors');
export const haveVectors = existsSync(path.join(vectorsDir, 'README.md'));

export function vector(relative: string): Buffer {
  return readFileSync(path.join(vectorsDir, relative));
}

export function vectorPath(relative: string): string {
  return path.join(vectorsDir, relative);
}

/** `it` that is skipped (visibly) without the conformance data. */
export function itWithVectors(title: string, fn: () => void | Promise<void>): void {
  (haveVectors ? it : it.skip)(`${title} [../shared/vectors]`, fn);
}

export const hex = (s: string): Buffer => Buffer.from(s, 'hex');
