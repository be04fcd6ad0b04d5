// What the structure tests read in source and built files: every file under a folder with a given suffix, and the
// relative module specifiers a file imports (static, dynamic and side-effect imports).
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const RELATIVE_IMPORT = /(?:\bfrom|\bimport\s*\(|\bimport)\s*['"](\.{1,2}\/[^'"]+)['"]/g;

export function filesUnder(dir: string, suffix: string, found: string[] = []): string[] {
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) filesUnder(path, suffix, found);
    else if (path.endsWith(suffix)) found.push(path);
  }
  return found;
}
