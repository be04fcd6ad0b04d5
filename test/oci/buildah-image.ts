// A confidential workload image laid out as buildah mkcw writes one (containers/buildah internal/mkcw): a LUKS1
// header (aes-xts-plain64, 512-bit key, sha256, PBKDF2, payload at sector 4040, as luksy's EncryptV1 places it),
// made here by cryptsetup; the ext4 payload (`mkfs -t ext4 -d` of the rootfs, which holds the image's OCI
// configuration as /.krun_config.json) encrypted in 512-byte sectors; then the workload footer.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { appendFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XtsSectorCipher } from '../../src/luks/xts.js';
import { BUILDAH_IMAGE_CONFIG } from '../../src/oci/confidential-initramfs.js';
import { encodeFooter, type WorkloadConfig } from '../../src/oci/workload-footer.js';

const SECTOR = 512;
const MiB = 1024 * 1024;
/** luksy's LUKS1 layout: eight 4000-stripe keyslots of a 64-byte key, each aligned to 4 KiB, after the first 4 KiB. */
const PAYLOAD_SECTORS = 4040;

export interface BuildahImageOptions {
  /** A root filesystem tree; its /.krun_config.json is written from `imageConfig`. */
  rootfs: string;
  imageConfig: unknown;
  image: string;
  passphrase: Buffer;
  workload: WorkloadConfig;
}

export async function writeBuildahImage(o: BuildahImageOptions): Promise<void> {
  writeFileSync(join(o.rootfs, BUILDAH_IMAGE_CONFIG), JSON.stringify(o.imageConfig));
  const work = mkdtempSync(join(tmpdir(), 'ts-vmm-buildah-image-'));
  try {
    const ext4 = join(work, 'rootfs.ext4');
    const content = Number(execFileSync('du', ['-sb', o.rootfs], { encoding: 'utf8' }).split('\t')[0]);
    const size = Math.max(10 * MiB, Math.ceil((content * 1.25) / 4096) * 4096);
    execFileSync('mke2fs', ['-q', '-t', 'ext4', '-d', o.rootfs, ext4, `${size / 1024}k`]);

    const volumeKey = randomBytes(64);
    const keyFile = join(work, 'volume.key');
    const passFile = join(work, 'pass');
    writeFileSync(keyFile, volumeKey, { mode: 0o600 });
    writeFileSync(passFile, o.passphrase, { mode: 0o600 });
    execFileSync('truncate', ['-s', String(PAYLOAD_SECTORS * SECTOR), o.image]);
    execFileSync('cryptsetup', [
      'luksFormat',
      '--type',
      'luks1',
      '--cipher',
      'aes-xts-plain64',
      '--key-size',
      '512',
      '--hash',
      'sha256',
      // One keyslot pass per thousand: the guest opens the disk under TCG.
      '--pbkdf-force-iterations',
      '1000',
      '--align-payload',
      '8',
      '--volume-key-file',
      keyFile,
      '--key-file',
      passFile,
      '--batch-mode',
      '--disable-locks',
      o.image,
    ]);
    const offset = Number(/^Payload offset:\s+(\d+)$/m.exec(execFileSync('cryptsetup', ['luksDump', o.image], { encoding: 'utf8' }))?.[1]);
    if (offset !== PAYLOAD_SECTORS) throw new Error(`cryptsetup put the LUKS1 payload at sector ${offset}, not ${PAYLOAD_SECTORS}`);

    const payload = readFileSync(ext4);
    new XtsSectorCipher(volumeKey, SECTOR).run(false, payload, payload, 0n);
    const file = await open(o.image, 'r+');
    try {
      await file.write(payload, 0, payload.length, offset * SECTOR);
    } finally {
      await file.close();
    }
    await appendFile(o.image, encodeFooter(o.workload, statSync(o.image).size));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
