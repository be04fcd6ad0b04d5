// The initramfs of a confidential run: the same for every workload, so the launch measurement an owner predicts
// depends only on the kernel, this archive, the command line, vCPUs and memory — never on the workload, which
// stays inside the encrypted disk. It carries busybox, the guest agent, the drivers (virtio, ext4, vsock, and
// device-mapper's crypt and integrity targets with the ciphers they ask for by name) and the host's Debian
// cryptsetup with its shared libraries. Its /init takes the launch secret from the slot the measured firmware
// filled, opens the disk with cryptsetup, mounts it and hands over to the agent, which reads the container's
// setup and process from the disk (written there by `ts-vmm mkcw`), or the process alone from the OCI image
// configuration buildah mkcw stores there.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Log } from '../assets/debian.js';
import { writeInitramfs } from '../initramfs/builder.js';
import { ModuleResolutionError, ModuleTree, readModuleImage } from '../initramfs/modules.js';
import { SECRET_SLOT_FILE } from '../initramfs/secret-slot.js';
import type { GuestMount } from './bundle-config.js';
import { AGENT_CONNECTION, GUEST, mountSetup, RUN_MODULES, shellQuote } from './guest-init.js';
import type { GuestSoftware } from './guest-initramfs.js';
import { findProgram, sharedLibraries } from './host-programs.js';

/**
 * The run's drivers, then device-mapper's crypt target with the templates aes-xts-plain64 needs (aes is built in,
 * xts and ecb are modules the kernel would otherwise ask modprobe for), the skcipher socket cryptsetup decrypts
 * keyslots through, and the integrity target with authenc (hmac-sha256 over XTS) and gcm with its ctr and ghash
 * templates (aes-gcm-random) for `mkcw --integrity` images, with the AEAD socket cryptsetup checks that cipher through.
 */
export const CONFIDENTIAL_MODULES = [
  ...RUN_MODULES,
  'dm_mod',
  'dm_crypt',
  'ecb',
  'xts',
  'algif_skcipher',
  'dm_integrity',
  'authenc',
  'ctr',
  'ghash_generic',
  'gcm',
  'algif_aead',
] as const;

/** Where the confidential image keeps the container's setup and process, as the agent's words files. */
export const IMAGE_FILES = {
  dir: '/.ts-vmm',
  config: '/.ts-vmm/config.json',
  setup: '/.ts-vmm/agent-setup',
  process: '/.ts-vmm/process',
  /** Host files the bundle binds in, copied into the image at mkcw time: the n-th is `copiedFiles/n`. */
  copiedFiles: '/.ts-vmm/files',
} as const;

/** Where buildah mkcw's disk keeps the image's OCI configuration (`json.Marshal` of the image), which names the process. */
export const BUILDAH_IMAGE_CONFIG = '/.krun_config.json';

/**
 * The container a buildah mkcw image gets, whose disk names its process but no mounts: those `runc spec` gives every
 * container (a tmpfs /dev with the standard devices, not the guest's devtmpfs with the disk under it).
 */
const BUILDAH_IMAGE_MOUNTS: readonly GuestMount[] = [
  { destination: '/proc', type: 'proc', source: 'proc', options: [] },
  { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
  { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
  { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
  { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
];

export const CRYPTSETUP = '/sbin/cryptsetup';
/** The dynamic loader's default directory on x86-64 Debian: no ld.so.cache is needed to find what lies here. */
const LIBRARY_DIR = '/lib/x86_64-linux-gnu';
const MAPPED_ROOT = 'ts-vmm-root';

/**
 * cryptsetup and every shared library it loads: those the loader lists, and libgcc_s, which glibc opens only
 * when a thread exits (argon2's worker threads do) and which therefore no listing shows.
 */
export async function cryptsetupFiles(): Promise<{ cryptsetup: string; loader: string; libraries: string[] }> {
  const cryptsetup = findProgram('cryptsetup');
  if (cryptsetup === undefined)
    throw new Error("cryptsetup not found: a confidential run carries the host's cryptsetup into the guest (Debian: cryptsetup-bin)");
  const listed = await sharedLibraries(cryptsetup);
  const loader = listed.find((l) => basename(l).startsWith('ld-linux'));
  const libc = listed.find((l) => basename(l) === 'libc.so.6');
  if (loader === undefined || libc === undefined) throw new Error(`${cryptsetup} is not a dynamically linked glibc program`);
  const gcc = join(dirname(libc), 'libgcc_s.so.1');
  if (!existsSync(gcc)) throw new Error(`${gcc} not found: cryptsetup's threads need it (Debian: libgcc-s1)`);
  const libraries = [...listed.filter((l) => l !== loader), gcc].sort((a, b) => basename(a).localeCompare(basename(b)));
  return { cryptsetup, loader, libraries };
}

/** The module file names under GUEST.modules, one per line, in load order: read by every script run on this archive. */
const LOAD_ORDER = `${GUEST.modules}/load-order`;

/**
 * The start of every script run on this archive: fail() (one `PREFIX: cause` line, then power off), the kernel's
 * file systems, the drivers, and a wait for each named block device.
 */
export function guestPreamble(prefix: string, devices: readonly string[]): string {
  const bb = shellQuote(GUEST.busybox);
  return `fail() { echo "${prefix}: $*" >&2; ${bb} sync; ${bb} poweroff -f; }
${bb} mount -t proc proc /proc || fail "mount /proc"
${bb} mount -t sysfs sysfs /sys || fail "mount /sys"
${bb} mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
${bb} mkdir -p /dev/pts && ${bb} mount -t devpts -o ptmxmode=0666 devpts /dev/pts || fail "mount /dev/pts"
${bb} mkdir -p /run/cryptsetup
for m in $(${bb} cat ${LOAD_ORDER}); do
  ${bb} insmod ${shellQuote(GUEST.modules)}/"$m" || fail "insmod $m"
done
for d in ${devices.map(shellQuote).join(' ')}; do
  n=0
  until ${bb} test -b "$d"; do
    n=$((n + 1)); [ $n -le 500 ] || fail "disk $d did not appear"; ${bb} usleep 10000
  done
done
`;
}

/**
 * The fixed /init of every confidential run. The passphrase goes from the slot to cryptsetup through a pipe and is
 * wiped from the slot; a failure powers the guest off with one `ts-vmm-init:` line naming the cause, which ts-vmm
 * reports.
 */
export function confidentialInitScript(): string {
  const q = shellQuote;
  const bb = q(GUEST.busybox);
  const device = q(GUEST.rootDevice);
  const agent = q(GUEST.agent);
  const root = q(GUEST.newRoot);
  const inRoot = (path: string): string => q(`${GUEST.newRoot}${path}`);
  return `#!${GUEST.busybox} sh
# ts-vmm confidential guest init: open the encrypted disk with the launch secret, hand over to the agent.
${guestPreamble('ts-vmm-init', [GUEST.rootDevice])}set -o pipefail
why=$({ ${agent} --take-secret /${SECRET_SLOT_FILE} | DM_DISABLE_UDEV=1 ${CRYPTSETUP} open --key-file=- ${device} ${MAPPED_ROOT}; } 2>&1) ||
  fail "cannot open the encrypted disk: $(echo $why)"
${bb} mkdir -p ${root}
${bb} mount -t ext4 -o rw /dev/mapper/${MAPPED_ROOT} ${root} || fail "cannot mount the decrypted disk"
if ${bb} test -f ${inRoot(IMAGE_FILES.setup)} -a -f ${inRoot(IMAGE_FILES.process)}; then
  exec ${agent} ${AGENT_CONNECTION.map(q).join(' ')} --setup-file ${inRoot(IMAGE_FILES.setup)} --process-file ${inRoot(IMAGE_FILES.process)}
elif ${bb} test -f ${inRoot(BUILDAH_IMAGE_CONFIG)}; then
  exec ${agent} ${[...AGENT_CONNECTION, ...mountSetup(BUILDAH_IMAGE_MOUNTS)].map(q).join(' ')} --image-config ${inRoot(BUILDAH_IMAGE_CONFIG)}
fi
fail "the disk holds no workload: neither ${IMAGE_FILES.setup} (ts-vmm mkcw) nor ${BUILDAH_IMAGE_CONFIG} (buildah mkcw)"
`;
}

/** Finds or builds the confidential initramfs under `cacheDir`; returns its path. */
export async function ensureConfidentialInitramfs(software: GuestSoftware, cacheDir: string, log: Log): Promise<string> {
  let modules: Awaited<ReturnType<ModuleTree['loadOrder']>>;
  try {
    modules = await (await ModuleTree.open(software.modulesDir)).loadOrder(CONFIDENTIAL_MODULES);
  } catch (e) {
    if (e instanceof ModuleResolutionError) {
      throw new ModuleResolutionError(`${e.message}: a confidential run needs ${CONFIDENTIAL_MODULES.join(', ')} (as modules or built in)`);
    }
    throw e;
  }
  const moduleFiles = modules.map((m) => `${m.name}.ko`);
  const tools = await cryptsetupFiles();
  const init = confidentialInitScript();
  const key = createHash('sha256').update(moduleFiles.join('\n'));
  for (const file of [software.busybox, software.agent, tools.cryptsetup, tools.loader, ...tools.libraries, ...modules.map((m) => m.path)]) {
    key.update(file).update(await readFile(file));
  }
  const path = join(cacheDir, 'initramfs', `confidential-${key.update(init).digest('hex').slice(0, 24)}.cpio`);
  if (existsSync(path)) return path;
  await mkdir(dirname(path), { recursive: true });
  log(`building the confidential initramfs (busybox, cryptsetup, ${modules.length} kernel modules, guest agent)`);
  const partial = `${path}.${process.pid}.partial`;
  try {
    await writeInitramfs(partial, 'none', async (image) => {
      for (const d of ['proc', 'sys', 'dev', 'run', 'tmp', GUEST.newRoot.slice(1)]) await image.mkdirp(d);
      await image.device('dev/console', 'char', 5, 1, { mode: 0o600 });
      await image.file('init', init, { mode: 0o755 });
      await image.hostFile(software.busybox, GUEST.busybox.slice(1));
      await image.hostFile(software.agent, GUEST.agent.slice(1));
      await image.file(CRYPTSETUP.slice(1), await readFile(tools.cryptsetup), { mode: 0o755 });
      await image.file(tools.loader.slice(1), await readFile(tools.loader), { mode: 0o755 });
      for (const lib of tools.libraries) await image.file(`${LIBRARY_DIR.slice(1)}/${basename(lib)}`, await readFile(lib), { mode: 0o644 });
      for (const [i, m] of modules.entries()) await image.file(`${GUEST.modules.slice(1)}/${moduleFiles[i]}`, await readModuleImage(m.path));
      await image.file(LOAD_ORDER.slice(1), `${moduleFiles.join('\n')}\n`, { mode: 0o644 });
    });
    await rename(partial, path);
  } catch (e) {
    await rm(partial, { force: true });
    throw e;
  }
  return path;
}
