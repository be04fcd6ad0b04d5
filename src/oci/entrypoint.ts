// Finds the workload's program inside the bundle's rootfs before a VM is started, the way execvp(3) will inside
// the guest: PATH search for bare names, symlinks resolved relative to the rootfs (never escaping it), and an
// execute-permission check for the process's uid/gid. A missing or non-executable entrypoint is a one-line error.
import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { BundleError, type BundleConfig } from './bundle-config.js';

/** The PATH the guest agent uses when the process env has none (the same default as runc and glibc). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const MAX_SYMLINKS = 40;

/** Resolves `guestPath` (absolute) inside `rootfs`; returns the host path and its stats, or undefined if absent. */
export function resolveInRootfs(rootfs: string, guestPath: string): { hostPath: string; stats: Stats } | undefined {
  const pending = guestPath.split('/').filter((c) => c !== '' && c !== '.');
  const resolved: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const component = pending.shift()!;
    if (component === '..') {
      resolved.pop();
      continue;
    }
    const hostPath = join(rootfs, ...resolved, component);
    let stats: Stats;
    try {
      stats = lstatSync(hostPath);
    } catch {
      return undefined;
    }
    if (stats.isSymbolicLink()) {
      if (++hops > MAX_SYMLINKS) return undefined;
      const target = readlinkSync(hostPath);
      if (target.startsWith('/')) resolved.length = 0;
      pending.unshift(...target.split('/').filter((c) => c !== '' && c !== '.'));
      continue;
    }
    if (pending.length > 0 && !stats.isDirectory()) return undefined;
    resolved.push(component);
  }
  const hostPath = join(rootfs, ...resolved);
  return { hostPath, stats: lstatSync(hostPath) };
}

function mayExecute(stats: Stats, uid: number, gids: number[]): boolean {
  if (uid === 0) return (stats.mode & 0o111) !== 0;
  if (stats.uid === uid) return (stats.mode & 0o100) !== 0;
  if (gids.includes(stats.gid)) return (stats.mode & 0o010) !== 0;
  return (stats.mode & 0o001) !== 0;
}

/** Checks that process.args[0] names an executable regular file in the rootfs; returns its guest path. */
export function checkEntrypoint(config: BundleConfig): string {
  const { args, env, cwd, uid, gid, additionalGids } = config.process;
  const program = args[0]!;
  const gids = [gid, ...additionalGids];
  const pathVar = env.findLast((e) => e.startsWith('PATH='))?.slice(5) ?? DEFAULT_PATH;
  const candidates = program.includes('/')
    ? [program.startsWith('/') ? program : `${cwd}/${program}`]
    : pathVar
        .split(':')
        .filter((d) => d.startsWith('/'))
        .map((d) => `${d}/${program}`);
  let notExecutable: string | undefined;
  for (const candidate of candidates) {
    const found = resolveInRootfs(config.rootfs, candidate);
    if (!found || found.stats.isDirectory()) continue;
    if (found.stats.isFile() && mayExecute(found.stats, uid, gids)) return candidate;
    notExecutable ??= found.hostPath;
  }
  if (notExecutable) {
    throw new BundleError(`${notExecutable}: entrypoint "${program}" is not executable by uid ${uid} (process.args[0] in ${config.configPath})`);
  }
  const where = program.includes('/') ? join(config.rootfs, candidates[0]!) : `${config.rootfs} (PATH=${pathVar})`;
  throw new BundleError(`${where}: entrypoint "${program}" not found (process.args[0] in ${config.configPath})`);
}
