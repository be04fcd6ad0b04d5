// Every file under a folder whose name ends in `suffix`, at any depth: what the structure tests read.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export function filesUnder(dir: string, suffix: string, found: string[] = []): string[] {
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) filesUnder(path, suffix, found);
    else if (path.endsWith(suffix)) found.push(path);
  }
  return found;
}
