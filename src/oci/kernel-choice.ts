// Which kernel a run boots: --kernel/--modules when given, else the one `ts-vmm setup --kernel` recorded, else
// Debian's stock kernel from the asset cache (fetched on first use).
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ensureDebianKernel, type AssetOptions } from '../assets/debian.js';
import { runCacheDir } from './paths.js';
import { errorMessage } from '../sys/error-message.js';

export interface GuestKernel {
  vmlinuz: string;
  /** `lib/modules/<release>` matching the kernel. */
  modulesDir: string;
}

const choiceFile = (): string => join(runCacheDir(), 'kernel.json');

function checked(kernel: GuestKernel, source: string): GuestKernel {
  if (!existsSync(kernel.vmlinuz)) throw new Error(`${kernel.vmlinuz}: kernel image not found (${source})`);
  if (!existsSync(kernel.modulesDir)) throw new Error(`${kernel.modulesDir}: module directory not found (${source})`);
  return kernel;
}

/** Records a kernel as the default for later runs. */
export async function rememberKernel(kernel: GuestKernel): Promise<void> {
  const chosen = checked({ vmlinuz: resolve(kernel.vmlinuz), modulesDir: resolve(kernel.modulesDir) }, 'ts-vmm setup --kernel/--modules');
  await mkdir(runCacheDir(), { recursive: true });
  await writeFile(choiceFile(), `${JSON.stringify(chosen, null, 2)}\n`);
}

/** --kernel and --modules: both or neither, checked before anything else is done. */
export function checkKernelPair(given: Partial<GuestKernel>): void {
  if ((given.vmlinuz === undefined) !== (given.modulesDir === undefined)) throw new Error('--kernel and --modules go together: a kernel needs its own modules');
}

export async function chooseKernel(given: Partial<GuestKernel>, assets: AssetOptions): Promise<GuestKernel> {
  checkKernelPair(given);
  if (given.vmlinuz !== undefined && given.modulesDir !== undefined) {
    return checked({ vmlinuz: resolve(given.vmlinuz), modulesDir: resolve(given.modulesDir) }, '--kernel/--modules');
  }
  if (existsSync(choiceFile())) {
    let recorded: GuestKernel;
    try {
      recorded = JSON.parse(readFileSync(choiceFile(), 'utf8')) as GuestKernel;
    } catch (e) {
      throw new Error(`${choiceFile()}: not valid JSON (${errorMessage(e)}); run ts-vmm setup again`);
    }
    return checked(recorded, `recorded in ${choiceFile()} by ts-vmm setup`);
  }
  const debian = await ensureDebianKernel(assets);
  return { vmlinuz: debian.vmlinuz, modulesDir: debian.modulesDir };
}
