// Where `ts-vmm run` keeps what it derives from bundles. Caches can be deleted at any time and are rebuilt;
// state holds what the user's workloads wrote (read-write root disks) and must not be deleted behind their back.
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Root disk images, the guest agent and initramfs parts: `$TS_VMM_RUN_CACHE`, else `~/.cache/ts-vmm/run`. */
export function runCacheDir(): string {
  return process.env.TS_VMM_RUN_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'ts-vmm', 'run');
}

/** Per-bundle state (the persistent disk of a read-write rootfs): `$TS_VMM_STATE`, else `~/.local/state/ts-vmm`. */
export function stateDir(): string {
  return process.env.TS_VMM_STATE || join(process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'ts-vmm');
}

/** The state directory of one bundle, named after its absolute path so each bundle keeps its own disk. */
export function bundleStateDir(bundle: string): string {
  const name =
    bundle
      .split('/')
      .filter(Boolean)
      .at(-1)
      ?.replace(/[^A-Za-z0-9._-]/g, '_') ?? 'root';
  const id = createHash('sha256').update(bundle).digest('hex').slice(0, 12);
  return join(stateDir(), 'bundles', `${name}-${id}`);
}
