// The virtio devices the command line asks for: `--disk FILE[,ro]`, `--vsock CID,UDS_PATH`.
import type { VirtioDeviceSpec } from '../virtio/factory.js';

/** `FILE[,ro]` as given to --disk. */
export function parseDiskOption(value: string): VirtioDeviceSpec {
  const readOnly = value.endsWith(',ro');
  const file = readOnly ? value.slice(0, -3) : value;
  if (file.length === 0) throw new Error(`--disk ${value}: expected FILE or FILE,ro`);
  return { kind: 'blk', path: file, readOnly };
}

/** `CID,UDS_PATH` as given to --vsock. */
export function parseVsockOption(value: string): VirtioDeviceSpec {
  const m = /^([0-9]+),(.+)$/.exec(value);
  if (!m) throw new Error(`--vsock ${value}: expected CID,UDS_PATH (e.g. 3,/tmp/vm.vsock)`);
  const guestCid = Number(m[1]);
  if (guestCid < 3 || guestCid > 0xffff_fffe) throw new Error(`--vsock ${value}: the guest CID must be between 3 and 4294967294`);
  return { kind: 'vsock', guestCid, udsPath: m[2]! };
}
