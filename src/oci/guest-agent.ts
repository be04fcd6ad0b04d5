// Builds the guest agent (src/guest/agent.c and image-config.c) into a static binary with the host's gcc and glibc (libc6-dev).
// Static, because the initramfs holds no shared libraries; C, because busybox has no AF_VSOCK and the agent must
// be PID 1 with nothing else to lean on. The binary is cached by the hash of its source and compiler flags.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { projectFile } from '../sys/project-paths.js';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The agent's C sources; image-config.h lies beside them. */
export const agentSources = (): string[] => ['agent.c', 'image-config.c', 'image-config.h'].map((f) => projectFile('src', 'guest', f));

const CFLAGS = ['-static', '-Os', '-s', '-Wall', '-Wextra', '-Werror', '-D_FORTIFY_SOURCE=2'];

/** Names a prebuilt agent binary, for hosts without gcc (the lab carries the host's build in this way). */
export const AGENT_ENV = 'TS_VMM_AGENT';

/**
 * Returns the path of the static agent binary: `$TS_VMM_AGENT` when set, else the one under `cacheDir` built from
 * this source, compiling it first if needed.
 */
export async function ensureGuestAgent(cacheDir: string, log: (message: string) => void = () => undefined): Promise<string> {
  const prebuilt = process.env[AGENT_ENV];
  if (prebuilt) {
    if (!existsSync(prebuilt)) throw new Error(`${prebuilt}: no such file (named by ${AGENT_ENV})`);
    return prebuilt;
  }
  const sources = agentSources();
  const hash = createHash('sha256');
  for (const file of sources) hash.update(basename(file)).update(readFileSync(file));
  const key = hash.update(CFLAGS.join(' ')).digest('hex').slice(0, 16);
  const binary = join(cacheDir, `agent-${key}`);
  if (existsSync(binary)) return binary;
  await mkdir(cacheDir, { recursive: true });
  log('compiling the guest agent (gcc -static)');
  const partial = `${binary}.${process.pid}.tmp`;
  try {
    await execFileAsync('gcc', [...CFLAGS, '-o', partial, ...sources.filter((f) => f.endsWith('.c'))]);
  } catch (e) {
    await rm(partial, { force: true });
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new Error("gcc not found: the guest agent is built with gcc and glibc's static libc (Debian: gcc, libc6-dev)");
    throw new Error(`compiling the guest agent failed:\n${(err.stderr ?? err.message).trim()}`);
  }
  await rename(partial, binary);
  return binary;
}
