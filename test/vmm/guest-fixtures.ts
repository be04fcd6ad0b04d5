// What the Linux boot tests start: the stock Debian kernel and busybox (from the asset cache), an
// initramfs whose /init is a given shell script, and a way to run `ts-vmm boot` as a user would.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureBusybox, ensureDebianKernel } from '../../src/assets/debian.js';
import { writeInitramfs } from '../../src/initramfs/builder.js';
import { processLines } from '../../src/sys/process-report.js';

const CLI = fileURLToPath(new URL('../../../bin/ts-vmm.js', import.meta.url));

export interface Guest {
  kernel: string;
  initrd(name: string, init: string): Promise<string>;
  /** Removes the initramfs files written so far. */
  dispose(): Promise<void>;
}

export async function guestAssets(): Promise<Guest> {
  const [kernel, busybox] = await Promise.all([ensureDebianKernel(), ensureBusybox()]);
  const dir = await mkdtemp(join(tmpdir(), 'ts-vmm-boot-'));
  return {
    kernel: kernel.vmlinuz,
    async initrd(name, init) {
      const path = join(dir, `${name}.cpio`);
      await writeInitramfs(path, 'none', async (b) => {
        await b.hostFile(busybox.path, 'bin/busybox');
        await b.file('init', `#!/bin/busybox sh\n/bin/busybox --install -s /bin\n${init}\n`, { mode: 0o755 });
        await b.mkdirp('proc');
        await b.mkdirp('sys');
        await b.mkdirp('dev');
      });
      return path;
    },
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}

export interface BootResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `ts-vmm boot` with `args`; kills it after `timeoutMs` (the result then has status null). */
export function tsVmmBoot(args: readonly string[], timeoutMs: number): Promise<BootResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'boot', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString('latin1');
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString('latin1');
    });
    const timer = setTimeout(() => {
      // What each thread of the VMM was doing is the first thing to know about a boot that never ended.
      stderr += `ts-vmm boot did not end within ${timeoutMs} ms; its threads:\n${processLines(child.pid!).join('\n')}\n`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}
