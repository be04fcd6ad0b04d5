// Builds the guest agent (src/guest/agent.c and image-config.c) into a static binary with the host's gcc and glibc
// (libc6-dev). Static, because the initramfs holds no shared libraries; C, because busybox has no AF_VSOCK and the
// agent must be PID 1 with nothing else to lean on. The binary is cached by the hash of its source and compiler flags.
import { existsSync } from 'node:fs';
import { buildC } from '../sys/c-build.js';
import { projectFile } from '../sys/project-paths.js';

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
  return buildC({
    what: 'the guest agent',
    name: 'agent',
    sources: ['agent.c', 'image-config.c', 'image-config.h'].map((f) => projectFile('src', 'guest', f)),
    flags: ['-static', '-Os', '-s', '-Wall', '-Wextra', '-Werror', '-D_FORTIFY_SOURCE=2'],
    dir: cacheDir,
    packages: "gcc, and libc6-dev for glibc's static libc",
    log,
  });
}
