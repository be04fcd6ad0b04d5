// What the guest does for one bundle: the /init script (busybox sh) that loads the drivers and mounts the root
// disk, the guest agent's command line that sets the container up (mounts, host name), and the process
// description the agent receives over its connection (arguments and environment may hold secrets, and have no
// room on a command line).
import type { BundleConfig, GuestMount, ProcessSpec } from './bundle-config.js';
import { mountCall } from './mount-options.js';

export const GUEST = {
  busybox: '/bin/busybox',
  agent: '/ts-vmm/agent',
  /** Host files the bundle binds in, copied into the run's initramfs: the n-th bind mount's is `copiedFiles/n`. */
  copiedFiles: '/ts-vmm/files',
  modules: '/lib/modules',
  newRoot: '/newroot',
  rootDevice: '/dev/vda',
} as const;

/** The host's vsock CID as seen from any guest, the port the agent connects to, and the one it takes `exec`s on. */
export const HOST_CID = 2;
export const AGENT_PORT = 1024;
export const EXEC_PORT = 1025;

/**
 * Drivers a run needs from the stock kernel, loaded in dependency order: virtio over MMIO (ACPI-enumerated),
 * the block disk, ext4 (with the crc32c it requests by name at mount time, which modules.dep cannot show) and
 * the vsock transport the agent talks over.
 */
export const RUN_MODULES = ['virtio_mmio', 'virtio_blk', 'crc32c_generic', 'ext4', 'vmw_vsock_virtio_transport'] as const;

/** Quotes a string for POSIX sh: single quotes, with embedded ones closed, escaped and reopened. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=,+@%-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The bundle's mounts, plus a devtmpfs /dev when the bundle mounts none (runtime-spec's default devices). */
export function guestMounts(config: BundleConfig): GuestMount[] {
  if (config.mounts.some((m) => m.destination === '/dev')) return config.mounts;
  return [{ destination: '/dev', type: 'devtmpfs', source: 'devtmpfs', options: ['nosuid', 'noexec'] }, ...config.mounts];
}

/** The agent's connection to the host, and the container root it hands back (unmounted) before powering off. */
export const AGENT_CONNECTION: readonly string[] = ['--vsock', `${HOST_CID}:${AGENT_PORT}`, '--root', GUEST.newRoot, '--unmount', GUEST.newRoot, '--poweroff'];

/** The container's setup for the agent: host name, mounts (the n-th bind mount's source is `copiedFiles/n`), /dev. */
export function containerSetup(config: BundleConfig, copiedFiles: string = GUEST.copiedFiles): string[] {
  return [...(config.hostname === undefined ? [] : ['--hostname', config.hostname]), ...mountSetup(guestMounts(config), copiedFiles)];
}

/** The agent's `--mount` words for these mounts (and `--populate-dev` for a tmpfs /dev). */
export function mountSetup(mounts: readonly GuestMount[], copiedFiles: string = GUEST.copiedFiles): string[] {
  const args: string[] = [];
  let copied = 0;
  for (const m of mounts) {
    const { flags, data } = mountCall(m.options);
    const source = m.type === 'bind' ? `${copiedFiles}/${copied++}` : m.source;
    args.push('--mount', m.type, source, m.destination, String(flags), data);
  }
  if (mounts.some((m) => m.destination === '/dev' && m.type === 'tmpfs')) args.push('--populate-dev', `${GUEST.newRoot}/dev`);
  return args;
}

/** Arguments of the guest agent (after its path) for this bundle: the host connection, exec's port, the container's setup. */
export function agentArguments(config: BundleConfig): string[] {
  return [...AGENT_CONNECTION, '--exec-listen', String(EXEC_PORT), ...containerSetup(config)];
}

/** The process description the agent receives in Process frames: its process options, `--`, the arguments. */
export function processWords(p: ProcessSpec): string[] {
  const words = ['--cwd', p.cwd, '--uid', String(p.uid), '--gid', String(p.gid)];
  for (const g of p.additionalGids) words.push('--group', String(g));
  if (p.umask !== undefined) words.push('--umask', `0${p.umask.toString(8)}`);
  if (p.terminal) words.push('--terminal');
  if (p.noNewPrivileges) words.push('--no-new-privileges');
  for (const l of p.rlimits) words.push('--rlimit', `${l.type}=${l.soft}:${l.hard}`);
  for (const e of p.env) words.push('--env', e);
  words.push('--', ...p.args);
  return words;
}

/** Where the guest's /init finds and puts things: GUEST in a real guest. */
export type GuestLayout = { readonly [K in keyof typeof GUEST]: string };

/**
 * The guest's /init for this bundle; `moduleFiles` are file names under `layout.modules` in load order. Every string
 * from outside this function (the bundle's values, file names, the layout) reaches the script only through
 * shellQuote, so the shell takes each for one word of data, whatever it holds.
 */
export function initScript(config: BundleConfig, moduleFiles: readonly string[], layout: GuestLayout = GUEST): string {
  const q = shellQuote;
  const bb = q(layout.busybox);
  const device = q(layout.rootDevice);
  const rootOptions = config.readonlyRoot ? 'ro,noload' : 'rw';
  return `#!${GUEST.busybox} sh
# ts-vmm guest init: load the drivers, mount the root disk, hand over to the agent (which opens a terminal
# workload's pty through /dev/ptmx, and that finds its devpts at /dev/pts).
fail() { echo "ts-vmm-init: $*" >&2; ${bb} sync; ${bb} poweroff -f; }
${bb} mount -t proc proc /proc || fail "mount /proc"
${bb} mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
${bb} mkdir -p /dev/pts && ${bb} mount -t devpts -o ptmxmode=0666 devpts /dev/pts || fail "mount /dev/pts"
for m in ${moduleFiles.map(q).join(' ')}; do
  ${bb} insmod ${q(layout.modules)}/"$m" || fail "insmod $m"
done
n=0
until ${bb} test -b ${device}; do
  n=$((n + 1)); [ $n -le 500 ] || fail "root disk did not appear"; ${bb} usleep 10000
done
${bb} mkdir -p ${q(layout.newRoot)}
${bb} mount -t ext4 -o ${rootOptions} ${device} ${q(layout.newRoot)} || fail "mount root disk"
exec ${q(layout.agent)} ${agentArguments(config).map(q).join(' ')}
`;
}
