// `ts-vmm mkcw`: a bundle becomes one encrypted disk. The rootfs and the bundle's config.json go into an
// ext4 filesystem (the config may carry secrets in args and env, so it travels inside the encrypted disk,
// never in the initramfs or on the kernel command line, which the host sees), the filesystem is
// encrypted as LUKS2 (aes-xts-plain64, 4 KiB sectors), and buildah mkcw's footer closes the image.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_DATA_OFFSET, DEFAULT_KDF, writeLuks2, type KdfChoice } from '../luks/writer.js';
import { buildIntegrityImage, type IntegrityChoice } from './integrity-build.js';
import type { VmLauncher } from './vm-request.js';
import { encodeWords } from './agent-protocol.js';
import type { BundleConfig } from './bundle-config.js';
import { IMAGE_FILES } from './confidential-initramfs.js';
import { containerSetup, GUEST, processWords } from './guest-init.js';
import { buildExt4Image, ext4At } from './root-disk.js';
import { sizeTree } from './tree-hash.js';
import { encodeFooter, type WorkloadConfig } from './workload-footer.js';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;

export interface ConfidentialImageOptions {
  config: BundleConfig;
  /** The bundle's config.json as written, carried byte for byte. */
  configText: string;
  image: string;
  passphrase: Buffer;
  kdf?: KdfChoice;
  workload: WorkloadConfig;
  /** LUKS2 with dm-integrity, formatted by a build VM booting this kernel and the confidential initramfs. */
  integrity?: { choice: IntegrityChoice; kernel: string; initrd: string; launch: VmLauncher };
  /** Called as the filesystem is encrypted: bytes done of its total. */
  onProgress?: (done: number, total: number) => void;
  /** Awaited before the finished image is renamed into place; if it fails, no image is left. */
  beforePlacing?: () => Promise<void>;
}

/** A workload id as buildah mkcw makes one when none is given: unique per image. */
export function newWorkloadId(): string {
  return randomBytes(32).toString('hex');
}

export async function buildConfidentialImage(options: ConfidentialImageOptions): Promise<void> {
  // Built beside the image, so that it is renamed into place; e2fsprogs' tools are given names relative to here.
  const work = await mkdtemp(join(dirname(resolve(options.image)), '.ts-vmm-mkcw-'));
  try {
    const summary = sizeTree(options.config.rootfs);
    // Room to write, as buildah mkcw leaves: a quarter of the content, at least 10 MiB.
    const freeMiB = Math.max(10, Math.ceil((summary.bytes * 0.25) / MiB));
    const partial = join(work, 'image');
    if (options.integrity) {
      const ext4 = join(work, 'rootfs.ext4');
      await buildExt4Image(options.config.rootfs, summary, ext4, true, freeMiB);
      await addWorkload(work, basename(ext4), 0, options.config, options.configText);
      const { choice, ...vm } = options.integrity;
      await buildIntegrityImage({
        ...vm,
        integrity: choice,
        plaintext: ext4,
        passphrase: options.passphrase,
        kdf: options.kdf ?? DEFAULT_KDF,
        output: partial,
        workDir: work,
      });
    } else {
      // The filesystem is made where the LUKS2 data goes and encrypted there, as cryptsetup reencrypt does: the
      // image is written once, not built in one file and copied encrypted into another.
      await buildExt4Image(options.config.rootfs, summary, partial, true, freeMiB, [], DEFAULT_DATA_OFFSET);
      await addWorkload(work, basename(partial), DEFAULT_DATA_OFFSET, options.config, options.configText);
      const total = (await stat(partial)).size - DEFAULT_DATA_OFFSET;
      const onProgress = options.onProgress && ((done: number) => options.onProgress!(done, total));
      await writeLuks2({ output: partial, source: { inPlace: total }, passphrase: options.passphrase, kdf: options.kdf, sectorSize: 4096, onProgress });
    }
    const image = await open(partial, 'r+');
    try {
      const { size } = await image.stat();
      await image.write(encodeFooter(options.workload, size), 0, undefined, size);
      await image.sync();
    } finally {
      await image.close();
    }
    await chmod(partial, 0o600);
    await options.beforePlacing?.();
    await rename(partial, options.image);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Puts the workload into the filesystem under IMAGE_FILES.dir, readable by root only, with debugfs: config.json as
 * given, and what the guest agent reads in its place (it reads no runtime-spec JSON): the container's setup and process as
 * words files, and copies of the host files the bundle binds in.
 */
async function addWorkload(work: string, ext4: string, at: number, config: BundleConfig, configText: string): Promise<void> {
  const copies = config.mounts.filter((m) => m.type === 'bind');
  const files: { name: string; bytes: Uint8Array; at: string }[] = [
    { name: 'config.json', bytes: Buffer.from(configText), at: IMAGE_FILES.config },
    { name: 'agent-setup', bytes: encodeWords(containerSetup(config, `${GUEST.newRoot}${IMAGE_FILES.copiedFiles}`)), at: IMAGE_FILES.setup },
    { name: 'process', bytes: encodeWords(processWords(config.process)), at: IMAGE_FILES.process },
  ];
  for (const [n, m] of copies.entries()) files.push({ name: `file-${n}`, bytes: await readFile(m.source), at: `${IMAGE_FILES.copiedFiles}/${n}` });
  const script = [`mkdir ${IMAGE_FILES.dir}`, `sif ${IMAGE_FILES.dir} mode 040700`];
  if (copies.length > 0) script.push(`mkdir ${IMAGE_FILES.copiedFiles}`, `sif ${IMAGE_FILES.copiedFiles} mode 040700`);
  for (const f of files) {
    const handle = await open(join(work, f.name), 'wx', 0o600);
    try {
      await handle.writeFile(f.bytes);
    } finally {
      await handle.close();
    }
    script.push(`write ${f.name} ${f.at}`, `sif ${f.at} mode 0100600`);
  }
  await writeFile(join(work, 'debugfs.cmd'), `${script.join('\n')}\n`);
  // debugfs reports a failed command on stderr and still exits 0: what was written is read back instead.
  const filesystem = ext4At(ext4, at);
  await execFileAsync('debugfs', ['-w', '-f', 'debugfs.cmd', filesystem], { cwd: work });
  for (const f of files) {
    const { stdout } = await execFileAsync('debugfs', ['-R', `cat ${f.at}`, filesystem], {
      cwd: work,
      encoding: 'buffer',
      maxBuffer: f.bytes.length * 2 + 4096,
    });
    if (!stdout.equals(f.bytes)) throw new Error(`debugfs could not put ${f.at} in the image`);
  }
}
