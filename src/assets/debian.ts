// Stock Debian binaries for guests: the distribution kernel and busybox-static, fetched with
// `apt-get download`, unpacked with `dpkg -x` and cached, so that guests boot exactly what Debian ships.
//
// Cache layout (root: $TS_VMM_CACHE, else ~/.cache/ts-vmm/debian):
//   debs/<package>_<version>_<arch>.deb    what apt-get downloaded
//   unpacked/<package>/                    the package's files; `.complete` holds its version and is
//                                          written last, so a half-unpacked tree is never used
// A cache holding only `unpacked/` (e.g. the trimmed offline copy inside the lab) works without apt.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const COMPLETE_MARKER = '.complete';
export const KERNEL_METAPACKAGE = 'linux-image-amd64';

export type Log = (message: string) => void;

export const stderrLog: Log = (message) => process.stderr.write(`ts-vmm: ${message}\n`);

export interface AssetOptions {
  /** Cache root; defaults to {@link defaultCacheDir}. */
  cacheDir?: string;
  /** Progress for long steps; defaults to stderr. */
  log?: Log;
}

export class AssetError extends Error {
  override readonly name = 'AssetError';
}

export function defaultCacheDir(): string {
  return process.env.TS_VMM_CACHE || join(homedir(), '.cache', 'ts-vmm', 'debian');
}

/** Where a package's files live inside a cache, relative to the cache root. */
export const unpackedPath = (pkg: string): string => join('unpacked', pkg);

export interface DebianPackage {
  readonly name: string;
  readonly version: string;
  /** Directory holding the package's files as `dpkg -x` lays them out (`boot/`, `lib/`, `bin/`...). */
  readonly root: string;
}

export interface DebianKernel {
  readonly package: DebianPackage;
  /** Kernel release, e.g. `6.1.0-56-amd64` (what `uname -r` prints in the guest). */
  readonly release: string;
  /** The bzImage, `boot/vmlinuz-<release>`. */
  readonly vmlinuz: string;
  /** `lib/modules/<release>`: the modules tree (without modules.dep when fresh from dpkg -x). */
  readonly modulesDir: string;
}

export interface Busybox {
  readonly package: DebianPackage;
  /** The statically linked busybox binary. */
  readonly path: string;
}

async function run(command: string, args: string[], cwd?: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, { cwd, maxBuffer: 1 << 24 });
    return stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') {
      throw new AssetError(
        `${command} not found: the stock Debian kernel and busybox are fetched with apt-get and dpkg; ` +
          'on a system without them, point TS_VMM_CACHE at a cache prepared on a Debian machine',
      );
    }
    throw new AssetError(`${command} ${args.join(' ')} failed: ${(err.stderr ?? '').trim() || err.message}`);
  }
}

async function cachedPackage(cache: string, name: string): Promise<DebianPackage | undefined> {
  const root = join(cache, unpackedPath(name));
  const marker = join(root, COMPLETE_MARKER);
  if (!existsSync(marker)) return undefined;
  return { name, version: (await readFile(marker, 'utf8')).trim(), root };
}

const unknownToApt = (message: string): boolean =>
  /Unable to locate package|Can't select candidate|has no installation candidate|No packages found/.test(message);

/** `apt-get update` once per process, and only when apt does not know a package (a fresh machine). */
let aptUpdated: Promise<void> | undefined;
function aptUpdate(log: Log): Promise<void> {
  if (process.getuid?.() !== 0) {
    return Promise.reject(new AssetError('apt does not know the package and only root can run apt-get update; run it, then retry'));
  }
  aptUpdated ??= (async () => {
    log('apt-get update (the package lists are missing or stale)');
    await run('apt-get', ['update', '-q']);
  })();
  return aptUpdated;
}

async function withAptLists<T>(log: Log, action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } catch (e) {
    if (!(e instanceof AssetError) || !unknownToApt(e.message)) throw e;
    await aptUpdate(log);
    return action();
  }
}

/** Ensures one Debian package is downloaded and unpacked in the cache; reuses what is there. */
export async function ensurePackage(name: string, options: AssetOptions = {}): Promise<DebianPackage> {
  if (!/^[a-z0-9][a-z0-9+.-]+$/.test(name)) throw new AssetError(`'${name}' is not a Debian package name`);
  const cache = options.cacheDir ?? defaultCacheDir();
  const log = options.log ?? stderrLog;
  const cached = await cachedPackage(cache, name);
  if (cached) return cached;

  const debs = join(cache, 'debs');
  await mkdir(debs, { recursive: true });
  log(`downloading ${name} (apt-get download)`);
  const before = new Set(await readdir(debs));
  await withAptLists(log, () => run('apt-get', ['download', '-q', name], debs));
  const fresh = (await readdir(debs)).filter((f) => f.startsWith(`${name}_`) && f.endsWith('.deb'));
  const deb = fresh.find((f) => !before.has(f)) ?? fresh.sort().at(-1);
  if (deb === undefined) throw new AssetError(`apt-get download ${name} reported success but left no ${name}_*.deb in ${debs}`);
  const version = decodeURIComponent(deb.split('_')[1] ?? '');

  log(`unpacking ${deb}`);
  await mkdir(join(cache, 'unpacked'), { recursive: true });
  const staging = await mkdtemp(join(cache, 'unpacked', `.${name}-`));
  try {
    await run('dpkg', ['-x', join(debs, deb), staging]);
    await writeFile(join(staging, COMPLETE_MARKER), `${version}\n`);
    await rename(staging, join(cache, unpackedPath(name)));
  } catch (e) {
    await rm(staging, { recursive: true, force: true });
    // Another process may have unpacked the same package meanwhile; its copy is as good as ours.
    const raced = await cachedPackage(cache, name);
    if (raced) return raced;
    throw e;
  }
  const done = await cachedPackage(cache, name);
  if (!done) throw new AssetError(`unpacking ${name} into ${cache} left no ${COMPLETE_MARKER}`);
  return done;
}

/** Orders Debian kernel package names by their numeric parts: linux-image-6.1.0-9 < linux-image-6.1.0-56. */
function compareKernelPackages(a: string, b: string): number {
  const nums = (s: string): number[] => (s.match(/\d+/g) ?? []).map(Number);
  const [x, y] = [nums(a), nums(b)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? -1) - (y[i] ?? -1);
    if (d !== 0) return d;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The concrete `linux-image-<abi>-amd64` package that the metapackage currently depends on. */
async function resolveKernelPackage(metapackage: string, log: Log): Promise<string> {
  const depends = await withAptLists(log, async () => {
    const out = await run('apt-cache', ['depends', '--no-recommends', '--no-suggests', metapackage]);
    if (!out.includes('Depends:')) throw new AssetError(`Unable to locate package ${metapackage}`);
    return out;
  });
  const match = /Depends:\s*(linux-image-[^\s<>]+)/.exec(depends);
  if (!match?.[1]) throw new AssetError(`apt-cache depends ${metapackage} names no linux-image package:\n${depends}`);
  return match[1];
}

/**
 * The stock Debian kernel: a cached one if the cache has any (the newest), otherwise the one the
 * metapackage `linux-image-amd64` points at, downloaded. `package` picks a concrete kernel package.
 */
export async function ensureDebianKernel(options: AssetOptions & { package?: string } = {}): Promise<DebianKernel> {
  const cache = options.cacheDir ?? defaultCacheDir();
  const log = options.log ?? stderrLog;
  let name = options.package;
  if (name === undefined || name === KERNEL_METAPACKAGE) {
    const unpacked = existsSync(join(cache, 'unpacked')) ? await readdir(join(cache, 'unpacked')) : [];
    const cachedKernels = unpacked
      .filter((d) => /^linux-image-\d.*-amd64$/.test(d) && existsSync(join(cache, 'unpacked', d, COMPLETE_MARKER)))
      .sort(compareKernelPackages);
    name = cachedKernels.at(-1) ?? (await resolveKernelPackage(KERNEL_METAPACKAGE, log));
  }
  const pkg = await ensurePackage(name, { cacheDir: cache, log });
  const modulesRoot = join(pkg.root, 'lib', 'modules');
  const releases = existsSync(modulesRoot) ? await readdir(modulesRoot) : [];
  const release = releases.find((r) => existsSync(join(pkg.root, 'boot', `vmlinuz-${r}`)));
  if (release === undefined) {
    throw new AssetError(`${pkg.root} holds no boot/vmlinuz-<release> matching lib/modules/<release>; is ${name} a kernel image package?`);
  }
  return { package: pkg, release, vmlinuz: join(pkg.root, 'boot', `vmlinuz-${release}`), modulesDir: join(modulesRoot, release) };
}

/** Debian's busybox-static: one static binary with the applets a minimal guest userland needs. */
export async function ensureBusybox(options: AssetOptions = {}): Promise<Busybox> {
  const pkg = await ensurePackage('busybox-static', options);
  const path = join(pkg.root, 'bin', 'busybox');
  if (!existsSync(path)) throw new AssetError(`busybox-static unpacked into ${pkg.root} but has no bin/busybox`);
  return { package: pkg, path };
}
