// The launch secret's way into a guest that runs a stock kernel: a zero-filled file in the initrd, its
// slot, which the measured firmware fills with the owner's secret before the kernel starts
// (firmware/reset.s). The slot is an uncompressed cpio archive of its own after the initrd: Linux
// unpacks concatenated archives, compressed or not, each starting on a 4-byte boundary.
import { PassThrough } from 'node:stream';
import { CpioWriter, headerLength } from './cpio.js';

/** Where the guest finds the secret once the kernel has unpacked its initramfs. */
export const SECRET_SLOT_FILE = 'ts-vmm-launch-secret';

export interface SlottedInitrd {
  initrd: Uint8Array;
  /** Offset of the slot's first byte in `initrd`. */
  slotOffset: number;
}

/** `initrd` followed by the slot archive: one file of `size` zero bytes, readable by root only. */
export async function withSecretSlot(initrd: Uint8Array, size: number): Promise<SlottedInitrd> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (chunk: Buffer) => chunks.push(chunk));
  const cpio = new CpioWriter(out);
  await cpio.file(SECRET_SLOT_FILE, new Uint8Array(size), { mode: 0o400 });
  await cpio.finish();
  out.end();
  const start = Math.ceil(initrd.length / 4) * 4;
  const slotted = new Uint8Array(start + chunks.reduce((n, c) => n + c.length, 0));
  slotted.set(initrd);
  let at = start;
  for (const chunk of chunks) {
    slotted.set(chunk, at);
    at += chunk.length;
  }
  return { initrd: slotted, slotOffset: start + headerLength(SECRET_SLOT_FILE) };
}
