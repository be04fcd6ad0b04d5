// runtime-spec mount options are mount(8) words; the guest agent calls mount(2), which takes flag bits plus a
// filesystem-specific data string. This splits one into the other, as runc and crun do.
import { constant } from '../sys/abi.js';

const H = 'linux/mount.h';
export const MS_RDONLY = constant('MS_RDONLY', H, 1);
export const MS_NOSUID = constant('MS_NOSUID', H, 2);
export const MS_NODEV = constant('MS_NODEV', H, 4);
export const MS_NOEXEC = constant('MS_NOEXEC', H, 8);
export const MS_SYNCHRONOUS = constant('MS_SYNCHRONOUS', H, 16);
export const MS_MANDLOCK = constant('MS_MANDLOCK', H, 64);
export const MS_DIRSYNC = constant('MS_DIRSYNC', H, 128);
export const MS_NOSYMFOLLOW = constant('MS_NOSYMFOLLOW', H, 256);
export const MS_NOATIME = constant('MS_NOATIME', H, 1024);
export const MS_NODIRATIME = constant('MS_NODIRATIME', H, 2048);
export const MS_RELATIME = constant('MS_RELATIME', H, 1 << 21);
export const MS_STRICTATIME = constant('MS_STRICTATIME', H, 1 << 24);
export const MS_LAZYTIME = constant('MS_LAZYTIME', H, 1 << 25);

/** Option word -> [flag, set (true) or clear (false)]. */
const FLAG_WORDS = new Map<string, [number, boolean]>([
  ['ro', [MS_RDONLY, true]],
  ['rw', [MS_RDONLY, false]],
  ['nosuid', [MS_NOSUID, true]],
  ['suid', [MS_NOSUID, false]],
  ['nodev', [MS_NODEV, true]],
  ['dev', [MS_NODEV, false]],
  ['noexec', [MS_NOEXEC, true]],
  ['exec', [MS_NOEXEC, false]],
  ['sync', [MS_SYNCHRONOUS, true]],
  ['async', [MS_SYNCHRONOUS, false]],
  ['mand', [MS_MANDLOCK, true]],
  ['nomand', [MS_MANDLOCK, false]],
  ['dirsync', [MS_DIRSYNC, true]],
  ['nosymfollow', [MS_NOSYMFOLLOW, true]],
  ['symfollow', [MS_NOSYMFOLLOW, false]],
  ['noatime', [MS_NOATIME, true]],
  ['atime', [MS_NOATIME, false]],
  ['nodiratime', [MS_NODIRATIME, true]],
  ['diratime', [MS_NODIRATIME, false]],
  ['relatime', [MS_RELATIME, true]],
  ['norelatime', [MS_RELATIME, false]],
  ['strictatime', [MS_STRICTATIME, true]],
  ['nostrictatime', [MS_STRICTATIME, false]],
  ['lazytime', [MS_LAZYTIME, true]],
  ['nolazytime', [MS_LAZYTIME, false]],
]);

/** Words that only make sense to mount(8) or fstab and have no mount(2) meaning. */
const USERSPACE_WORDS = new Set(['defaults', 'auto', 'noauto', 'user', 'nouser', 'users', 'nofail', '_netdev']);

export interface MountCall {
  flags: number;
  data: string;
}

/** Every option word that becomes a mount(2) flag or is dropped as mount(8)'s own (runtime-spec features' mountOptions). */
export const KNOWN_MOUNT_OPTIONS: readonly string[] = [...FLAG_WORDS.keys(), ...USERSPACE_WORDS];

export function mountCall(options: readonly string[]): MountCall {
  let flags = 0;
  const data: string[] = [];
  for (const word of options) {
    const flag = FLAG_WORDS.get(word);
    if (flag) flags = flag[1] ? flags | flag[0] : flags & ~flag[0];
    else if (!USERSPACE_WORDS.has(word)) data.push(word);
  }
  return { flags: flags >>> 0, data: data.join(',') };
}
