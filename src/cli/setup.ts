// `ts-vmm setup`: everything `ts-vmm run` needs, fetched and built ahead of time with progress shown: the
// kernel (Debian's stock one unless --kernel/--modules), static busybox, the guest agent, the shared initramfs,
// and the example bundle's root filesystem.
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureBusybox, stderrLog } from '../assets/debian.js';
import { projectFile } from '../sys/project-paths.js';
import { writeBusyboxRootfs } from '../oci/example-rootfs.js';
import { ensureGuestAgent } from '../oci/guest-agent.js';
import { ensureBaseInitramfs } from '../oci/guest-initramfs.js';
import { chooseKernel, rememberKernel } from '../oci/kernel-choice.js';
import { runCacheDir } from '../oci/paths.js';
import { reportFailure } from './report-failure.js';

/** The example bundle whose rootfs setup generates; its entrypoint script is committed next to config.json. */
export const EXAMPLE_BUNDLE = 'examples/hello';

export async function writeExampleRootfs(busybox: string): Promise<string> {
  const bundle = projectFile(EXAMPLE_BUNDLE);
  const hello = readFileSync(join(bundle, 'hello.sh'), 'utf8');
  await writeBusyboxRootfs(busybox, join(bundle, 'rootfs'), { 'usr/bin/hello': { content: hello, mode: 0o755 } });
  return bundle;
}

export function register(program: Command): void {
  program
    .command('setup')
    .description('fetch and build what ts-vmm run needs: kernel, busybox, guest agent, initramfs, the example bundle')
    .option('--kernel <vmlinuz>', "use this kernel for runs instead of Debian's stock one (needs --modules)")
    .option('--modules <dir>', "the kernel's lib/modules/<release> directory")
    .action(async (options: { kernel?: string; modules?: string }) => {
      try {
        const log = stderrLog;
        const kernel = await chooseKernel({ vmlinuz: options.kernel, modulesDir: options.modules }, { log });
        if (options.kernel) await rememberKernel(kernel);
        log(`kernel: ${kernel.vmlinuz}`);
        const busybox = await ensureBusybox({ log });
        const agent = await ensureGuestAgent(runCacheDir(), log);
        await ensureBaseInitramfs({ modulesDir: kernel.modulesDir, busybox: busybox.path, agent }, runCacheDir(), log);
        log(`writing the example bundle's rootfs (${EXAMPLE_BUNDLE}/rootfs)`);
        const bundle = await writeExampleRootfs(busybox.path);
        log(`ready: ts-vmm run ${bundle}`);
      } catch (e) {
        process.exitCode = reportFailure(e);
      }
    });
}
