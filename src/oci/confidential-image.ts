// `ts-vmm mkcw`: a bundle becomes one encrypted disk. The rootfs and the bundle's config.json go into an
// ext4 filesystem (the config may carry secrets in args and env, so it travels inside the encrypted disk,
// never in the initramfs or on the kernel command line, which the host sees), the filesystem is
// encrypted as LUKS2 (aes-xts-plain64, 4 KiB sectors), and buildah mkcw's footer closes the image.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, open, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeLuks2, type KdfChoice } from '../luks/writer.js';
import type { BundleConfig } from './bundle-config.js';
import { buildExt4Image } from './root-disk.js';
import { hashTree } from './tree-hash.js';
import { encodeFooter, type WorkloadConfig } from './workload-footer.js';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;

/** Where the guest finds the bundle's config.json inside the decrypted filesystem. */
export const CONFIG_IN_IMAGE = '/.ts-vmm/config.json';

export interface ConfidentialImageOptions {
  config: BundleConfig;
  /** The bundle's config.json as written, carried byte for byte. */
  configText: string;
  image: string;
  passphrase: Buffer;
  kdf?: KdfChoice;
  workload: WorkloadConfig;
  /** Called as the filesystem is encrypted: bytes done of its total. */
  onProgress?: (done: number, total: number) => void;
}

/** A workload id as buildah mkcw makes one when none is given: unique per image. */
export function newWorkloadId(): string {
  return randomBytes(32).toString('hex');
}

export async function buildConfidentialImage(options: ConfidentialImageOptions): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'ts-vmm-mkcw-'));
  const partial = `${options.image}.${process.pid}.partial`;
  try {
    const ext4 = join(work, 'rootfs.ext4');
    const summary = await hashTree(options.config.rootfs);
    // Room to write, as buildah mkcw leaves: a quarter of the content, at least 10 MiB.
    await buildExt4Image(options.config.rootfs, summary, ext4, true, Math.max(10, Math.ceil((summary.bytes * 0.25) / MiB)));
    await addConfig(ext4, work, options.configText);
    const { size: total } = await stat(ext4);
    const onProgress = options.onProgress && ((done: number) => options.onProgress!(done, total));
    await writeLuks2({ output: partial, source: ext4, passphrase: options.passphrase, kdf: options.kdf, sectorSize: 4096, onProgress });
    const image = await open(partial, 'r+');
    try {
      const { size } = await image.stat();
      await image.write(encodeFooter(options.workload, size), 0, undefined, size);
      await image.sync();
    } finally {
      await image.close();
    }
    await chmod(partial, 0o600);
    await rename(partial, options.image);
  } finally {
    await rm(partial, { force: true });
    await rm(work, { recursive: true, force: true });
  }
}

/** Puts config.json into the filesystem at CONFIG_IN_IMAGE, readable by root only, with debugfs. */
async function addConfig(ext4: string, work: string, configText: string): Promise<void> {
  const handle = await open(join(work, 'config.json'), 'wx', 0o600);
  try {
    await handle.writeFile(configText);
  } finally {
    await handle.close();
  }
  const script = ['mkdir /.ts-vmm', 'sif /.ts-vmm mode 040700', `write config.json ${CONFIG_IN_IMAGE}`, `sif ${CONFIG_IN_IMAGE} mode 0100600`].join('\n');
  await writeFile(join(work, 'debugfs.cmd'), `${script}\n`);
  // debugfs reports a failed command on stderr and still exits 0: the result is read back instead.
  await execFileAsync('debugfs', ['-w', '-f', 'debugfs.cmd', ext4], { cwd: work });
  const { stdout } = await execFileAsync('debugfs', ['-R', `cat ${CONFIG_IN_IMAGE}`, ext4], { cwd: work, maxBuffer: configText.length * 2 + 4096 });
  if (stdout !== configText) throw new Error(`debugfs could not put the bundle config at ${CONFIG_IN_IMAGE} in the image`);
}
