// LUKS2 with dm-integrity (authenticated encryption: a sector the host changed fails to read in the guest) cannot
// be laid out without the kernel: the integrity superblock, journal and tag areas are dm-integrity's own. So an
// integrity image is formatted by a short-lived build VM: the confidential initramfs (its cryptsetup and drivers)
// with another /init, the plaintext ext4 as /dev/vda (read-only) and the new image as /dev/vdb. It runs cryptsetup
// `luksFormat --integrity`, opens the result and copies the filesystem in; the passphrase travels only in the build
// VM's initramfs, on the owner's machine.
import { open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeInitramfs } from '../initramfs/builder.js';
import type { KdfChoice } from '../luks/writer.js';
import { CRYPTSETUP, guestPreamble } from './confidential-initramfs.js';
import { GUEST, shellQuote } from './guest-init.js';
import type { VmLauncher } from './vm-request.js';

export type IntegrityChoice = 'hmac-sha256' | 'aead';
export const INTEGRITY_CHOICES: readonly IntegrityChoice[] = ['hmac-sha256', 'aead'];

/**
 * The data cipher each choice pairs with: hmac-sha256 authenticates aes-xts-plain64 sectors (a 32-byte tag each);
 * aead is AES-GCM itself, which needs a nonce that never repeats under one key, hence a random IV per sector write
 * kept beside the 16-byte tag in dm-integrity's metadata (cryptsetup's `aes-gcm-random`, a 256-bit key).
 */
const DATA_CIPHER: Record<IntegrityChoice, { cipher: string; keyBits: number }> = {
  'hmac-sha256': { cipher: 'aes-xts-plain64', keyBits: 512 },
  aead: { cipher: 'aes-gcm-random', keyBits: 256 },
};

const MiB = 1024 * 1024;
const PASSPHRASE_FILE = '/build/passphrase';
const DONE = 'ts-vmm-build: done';
/** The build VM's memory: cryptsetup's argon2 needs the KDF's memory, the kernel and initramfs the rest. */
const BASE_MEMORY_MIB = 256;

/** cryptsetup's options for the keyslot KDF the user chose. */
function kdfOptions(kdf: KdfChoice): string[] {
  if (kdf.type === 'pbkdf2') return ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', String(kdf.iterations)];
  return ['--pbkdf', 'argon2id', '--pbkdf-memory', String(kdf.memoryKiB), '--pbkdf-force-iterations', String(kdf.time), '--pbkdf-parallel', String(kdf.cpus)];
}

/** The build VM's /init: format /dev/vdb with integrity, copy /dev/vda into it, report, power off. */
export function integrityBuildScript(integrity: IntegrityChoice, kdf: KdfChoice, plaintextBytes: number): string {
  const bb = shellQuote(GUEST.busybox);
  const format = [
    'luksFormat',
    '--batch-mode',
    '--type',
    'luks2',
    '--cipher',
    DATA_CIPHER[integrity].cipher,
    '--key-size',
    String(DATA_CIPHER[integrity].keyBits),
    '--sector-size',
    '4096',
    '--integrity',
    integrity,
    // Every sector of the filesystem is written below, which sets its tag; the rest is never read.
    '--integrity-no-wipe',
    ...kdfOptions(kdf),
    '--key-file',
    PASSPHRASE_FILE,
    '/dev/vdb',
  ];
  return `#!${GUEST.busybox} sh
# ts-vmm integrity build VM: format /dev/vdb as LUKS2 with dm-integrity and copy the filesystem on /dev/vda into it.
${guestPreamble('ts-vmm-build', ['/dev/vda', '/dev/vdb'])}export DM_DISABLE_UDEV=1
why=$(${CRYPTSETUP} ${format.map(shellQuote).join(' ')} 2>&1) || fail "cryptsetup luksFormat: $(echo $why)"
why=$(${CRYPTSETUP} open --key-file ${PASSPHRASE_FILE} /dev/vdb built 2>&1) || fail "cryptsetup open: $(echo $why)"
${bb} rm -f ${PASSPHRASE_FILE}
room=$(${bb} blockdev --getsize64 /dev/mapper/built)
[ "$room" -ge ${plaintextBytes} ] || fail "the formatted image holds $room bytes, the filesystem needs ${plaintextBytes}"
${bb} dd if=/dev/vda of=/dev/mapper/built bs=1048576 2>/dev/null || fail "copying the filesystem failed"
${bb} sync
why=$(${CRYPTSETUP} close built 2>&1) || fail "cryptsetup close: $(echo $why)"
echo "${DONE}"
${bb} poweroff -f
`;
}

export interface IntegrityBuild {
  kernel: string;
  /** The confidential initramfs (cryptsetup, dm-integrity and its ciphers). */
  initrd: string;
  /** The plaintext ext4 image. */
  plaintext: string;
  passphrase: Uint8Array;
  integrity: IntegrityChoice;
  kdf: KdfChoice;
  /** Where to write the image (LUKS2 header, integrity metadata, data); created 0600. */
  output: string;
  /** For the build VM's initrd and its vsock socket. */
  workDir: string;
  launch: VmLauncher;
}

/**
 * Room for dm-integrity beside the data: at most 32 bytes of tag (and IV) per 4 KiB sector and a journal of 1/128 of the device (the
 * kernel's default), under 2% together, its superblock, and LUKS2's 16 MiB header, with margin; the build VM checks
 * the formatted size against the filesystem's.
 */
export function integrityImageSize(plaintextBytes: number): number {
  return Math.ceil((plaintextBytes * 1.03 + 24 * MiB) / MiB) * MiB;
}

/** Formats `output` in the build VM; throws with the VM's own account of a failure. */
export async function buildIntegrityImage(b: IntegrityBuild): Promise<void> {
  const plaintextBytes = (await stat(b.plaintext)).size;
  // It holds the passphrase: readable by its owner only from the start.
  const extra = join(b.workDir, 'build.cpio');
  await (await open(extra, 'wx', 0o600)).close();
  await writeInitramfs(extra, 'none', async (image) => {
    // Later archives replace earlier files: this /init is the build's.
    await image.file('init', integrityBuildScript(b.integrity, b.kdf, plaintextBytes), { mode: 0o755 });
    await image.file(PASSPHRASE_FILE.slice(1), b.passphrase, { mode: 0o600 });
  });
  const out = await open(b.output, 'wx', 0o600);
  await out.truncate(integrityImageSize(plaintextBytes));
  await out.close();
  let console = '';
  try {
    const vm = await b.launch({
      kernel: b.kernel,
      initrd: [b.initrd, extra],
      cmdline: 'console=ttyS0 quiet loglevel=1 panic=-1 pci=off',
      cpus: 1,
      memoryMiB: BASE_MEMORY_MIB + Math.ceil((b.kdf.type === 'argon2id' ? b.kdf.memoryKiB : 0) / 1024),
      disks: [
        { path: b.plaintext, readonly: true },
        { path: b.output, readonly: false },
      ],
      vsock: { cid: 3, udsPath: join(b.workDir, 'build-vsock') },
      consoleOutput: (bytes) => {
        console = (console + Buffer.from(bytes).toString('utf8')).slice(-16384);
      },
    });
    const end = await vm.exited;
    if (!console.includes(DONE)) {
      const said = /^ts-vmm-build: (.*)$/m.exec(console)?.[1];
      throw new Error(`the integrity build VM failed: ${said ?? end.reason}`);
    }
  } finally {
    await rm(extra, { force: true });
  }
}
