// The initramfs of a run, in two cpio archives the kernel unpacks one after the other: a base shared by every run
// with the same kernel, busybox and agent (static busybox, the drivers, the agent; built once and cached), and a
// few-hundred-byte archive with this run's /init. A warm start therefore writes only the small one. The base ends
// on a page boundary, so the VMM maps both files side by side and keeps no copy of either.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { writeInitramfs } from '../initramfs/builder.js';
import { PAGE_SIZE } from '../sys/sys.js';
import { ModuleTree, ModuleResolutionError, readModuleImage, type KernelModule } from '../initramfs/modules.js';
import type { BundleConfig } from './bundle-config.js';
import { GUEST, initScript, RUN_MODULES } from './guest-init.js';

export interface GuestSoftware {
  /** `lib/modules/<release>` of the kernel that will boot. */
  modulesDir: string;
  busybox: string;
  agent: string;
}

export interface BaseInitramfs {
  path: string;
  /** File names under GUEST.modules, in load order. */
  moduleFiles: string[];
  built: boolean;
}

/** Resolves the run's drivers in `modulesDir`; a kernel lacking one is an error naming the module and directory. */
export async function runModules(modulesDir: string): Promise<KernelModule[]> {
  let tree: ModuleTree;
  try {
    tree = await ModuleTree.open(modulesDir);
    return await tree.loadOrder(RUN_MODULES);
  } catch (e) {
    if (e instanceof ModuleResolutionError) {
      throw new ModuleResolutionError(`${e.message}: ts-vmm run needs ${RUN_MODULES.join(', ')} (as modules or built in)`);
    }
    throw e;
  }
}

const moduleFileName = (m: KernelModule): string => `${m.name}.ko`;
/** Part of the cache key: a base built before its archive was padded to whole pages is built again. */
const BASE_LAYOUT = 'page-padded';

/** Finds or builds the shared part of the initramfs under `cacheDir`. */
export async function ensureBaseInitramfs(software: GuestSoftware, cacheDir: string, log: (m: string) => void = () => undefined): Promise<BaseInitramfs> {
  const modules = await runModules(software.modulesDir);
  const moduleFiles = modules.map(moduleFileName);
  const key = createHash('sha256')
    .update(JSON.stringify([BASE_LAYOUT, software.modulesDir, software.busybox, software.agent, moduleFiles]))
    .digest('hex')
    .slice(0, 24);
  const dir = join(cacheDir, 'initramfs');
  const path = join(dir, `base-${key}.cpio`);
  if (existsSync(path)) return { path, moduleFiles, built: false };
  await mkdir(dir, { recursive: true });
  log(`building the initramfs (busybox, ${modules.length} kernel modules, guest agent)`);
  const partial = `${path}.${process.pid}.partial`;
  try {
    const written = await writeInitramfs(partial, 'none', async (image) => {
      for (const d of ['proc', 'sys', 'dev', 'tmp', GUEST.newRoot.slice(1)]) await image.mkdirp(d);
      await image.device('dev/console', 'char', 5, 1, { mode: 0o600 });
      await image.hostFile(software.busybox, GUEST.busybox.slice(1));
      await image.hostFile(software.agent, GUEST.agent.slice(1));
      // Stored decompressed, so insmod needs neither a decompressor nor kernel module decompression support.
      for (const [i, m] of modules.entries()) await image.file(`${GUEST.modules.slice(1)}/${moduleFiles[i]}`, await readModuleImage(m.path));
    });
    // Zeros up to a whole number of pages, which the kernel skips between archives: the VMM can then map the run's
    // archive right after this one instead of joining the two in its heap (src/sys/mapped-file.ts).
    await truncate(partial, Math.ceil(written / PAGE_SIZE) * PAGE_SIZE);
    await rename(partial, path);
  } catch (e) {
    await rm(partial, { force: true });
    throw e;
  }
  return { path, moduleFiles, built: true };
}

/** Writes `<dir>/run.cpio`, holding this run's /init; returns the run's initrd: the base archive, then that one. */
export async function writeRunInitrd(base: BaseInitramfs, config: BundleConfig, dir: string): Promise<string[]> {
  const runPart = join(dir, 'run.cpio');
  await writeInitramfs(runPart, 'none', async (image) => {
    await image.file('init', new TextEncoder().encode(initScript(config, base.moduleFiles)), { mode: 0o755 });
    // Read now, at create: the copy is what the container sees, as with a Kata guest without shared files.
    const copies = config.mounts.filter((m) => m.type === 'bind');
    for (const [n, m] of copies.entries()) await image.file(`${GUEST.copiedFiles.slice(1)}/${n}`, await readFile(m.source), { mode: 0o644 });
  });
  return [base.path, runPart];
}
