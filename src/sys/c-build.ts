// C compiled with the host's gcc on first use, cached under a name that carries the hash of the sources and flags,
// so an edited source is rebuilt and an unchanged one never is. Written to a partial file and renamed: processes
// building at once each get a whole file.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';

export interface CBuild {
  /** What is built, for messages: "the guest agent". */
  what: string;
  /** The output's name before its hash. */
  name: string;
  /** Every file the output depends on (headers included); the `.c` files are compiled. */
  sources: readonly string[];
  /** gcc's flags before the sources (with `-o FILE` added); `libraries` go after them. */
  flags: readonly string[];
  libraries?: readonly string[];
  dir: string;
  /** The Debian packages that provide gcc and what the build links, for the message when gcc is missing. */
  packages: string;
  log?: (message: string) => void;
}

/** Returns the path of the built file, compiling it first if needed. */
export function buildC(b: CBuild): string {
  const hash = createHash('sha256');
  for (const file of b.sources) hash.update(basename(file)).update(readFileSync(file));
  const key = hash
    .update([...b.flags, '--', ...(b.libraries ?? [])].join(' '))
    .digest('hex')
    .slice(0, 16);
  const output = join(b.dir, `${b.name}-${key}`);
  if (existsSync(output)) return output;
  mkdirSync(b.dir, { recursive: true });
  b.log?.(`compiling ${b.what} (gcc)`);
  const partial = `${output}.${process.pid}.tmp`;
  try {
    const sources = b.sources.filter((f) => f.endsWith('.c'));
    execFileSync('gcc', [...b.flags, '-o', partial, ...sources, ...(b.libraries ?? [])], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    rmSync(partial, { force: true });
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT') throw new Error(`gcc not found: ${b.what} is built with gcc (Debian: ${b.packages})`);
    throw new Error(`compiling ${b.what} failed:\n${(err.stderr?.toString() || err.message).trim()}`);
  }
  renameSync(partial, output);
  return output;
}
