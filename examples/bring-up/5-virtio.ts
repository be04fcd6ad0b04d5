// Step 5: virtio by hand. One virtqueue of the project's virtio-blk device, behind its virtio-mmio
// transport, driven by a tiny 64-bit guest: it programs the transport's registers (status handshake,
// features, the queue's size and ring addresses), makes one request available and kicks the device,
// then waits for the used ring. The request itself (three descriptors: header, data, status) is
// written into guest RAM here, before the guest runs, so each field can be named as it is written.
// `node 5-virtio.js corrupt` points the data descriptor outside guest RAM: watch the device refuse it.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bus } from '../../src/devices/bus.js';
import { VIRTIO_MMIO_BASE } from '../../src/boot/layout.js';
import { VcpuThreads } from '../../src/kvm/vcpu-threads.js';
import { VirtioBlk } from '../../src/virtio/blk.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_QUEUE_AVAIL_LOW,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_QUEUE_USED_LOW,
  VIRTIO_MMIO_STATUS,
  VIRTIO_F_VERSION_1,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
} from '../../src/virtio/abi.js';
import { VIRTIO_MMIO_WINDOW, VirtioMmioTransport } from '../../src/virtio/mmio.js';
import { enterLongMode, failInOneLine, hex, tinyVm } from './guest-vm.js';

failInOneLine();

const CODE = 0x1000;
const DESC = 0x1_0000; // descriptor table: 16 bytes per descriptor
const AVAIL = 0x1_0100; // available ring: flags, idx, ring[]: what the driver offers
const USED = 0x1_0200; // used ring: flags, idx, ring[] of {id, len}: what the device has finished
const HEADER = 0x1_1000;
const STATUS_BYTE = 0x1_1100;
const DATA = 0x1_2000;
const SCRIPT = 0x1_3000;
const QUEUE_SIZE = 8;
const corrupt = process.argv[2] === 'corrupt';

// The driver's register writes, in the order virtio 1.2 §3.1.1 and §4.2.3.2 ask for (offset, value).
const ACK_DRIVER = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
const script: [number, number, string][] = [
  [VIRTIO_MMIO_STATUS, 0, 'Status = 0: reset'],
  [VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE, 'Status = ACKNOWLEDGE'],
  [VIRTIO_MMIO_STATUS, ACK_DRIVER, 'Status |= DRIVER'],
  [VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1, 'DriverFeaturesSel = 1'],
  [VIRTIO_MMIO_DRIVER_FEATURES, 1 << (VIRTIO_F_VERSION_1 - 32), 'DriverFeatures[32..63] = VERSION_1'],
  [VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0, 'DriverFeaturesSel = 0'],
  [VIRTIO_MMIO_DRIVER_FEATURES, 0, 'DriverFeatures[0..31] = none'],
  [VIRTIO_MMIO_STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK, 'Status |= FEATURES_OK'],
  [VIRTIO_MMIO_QUEUE_SEL, 0, 'QueueSel = 0'],
  [VIRTIO_MMIO_QUEUE_NUM, QUEUE_SIZE, `QueueNum = ${QUEUE_SIZE}`],
  [VIRTIO_MMIO_QUEUE_DESC_LOW, DESC, 'QueueDescLow'],
  [VIRTIO_MMIO_QUEUE_AVAIL_LOW, AVAIL, 'QueueDriverLow (available ring)'],
  [VIRTIO_MMIO_QUEUE_USED_LOW, USED, 'QueueDeviceLow (used ring)'],
  [VIRTIO_MMIO_QUEUE_READY, 1, 'QueueReady = 1'],
  [VIRTIO_MMIO_STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK, 'Status |= DRIVER_OK'],
];

// 64-bit code, hand-assembled: run the script, publish the request, kick, wait for the device.
const code = [
  0xbb,
  ...u32(VIRTIO_MMIO_BASE), //          mov ebx, register window
  0xbe,
  ...u32(SCRIPT), //                    mov esi, script
  0x8b,
  0x06, //                        next: mov eax, [rsi]          (register offset)
  0x83,
  0xf8,
  0xff, //                        cmp eax, -1
  0x74,
  0x0b, //                              je done
  0x8b,
  0x56,
  0x04, //                        mov edx, [rsi+4]        (value)
  0x89,
  0x14,
  0x03, //                        mov [rbx+rax], edx      (an MMIO write: an exit)
  0x83,
  0xc6,
  0x08, //                        add esi, 8
  0xeb,
  0xee, //                              jmp next
  0x66,
  0xc7,
  0x04,
  0x25,
  ...u32(AVAIL + 2),
  0x01,
  0x00, // done: mov word [avail.idx], 1
  0xc7,
  0x43,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  0x00,
  0x00,
  0x00,
  0x00, // mov dword [rbx+QueueNotify], 0: the kick
  0x0f,
  0xb7,
  0x04,
  0x25,
  ...u32(USED + 2), // wait: movzx eax, word [used.idx]
  0x85,
  0xc0, //                              test eax, eax
  0x75,
  0x0b, //                              jnz out
  0x8b,
  0x43,
  VIRTIO_MMIO_STATUS, //          mov eax, [rbx+Status]
  0xa8,
  VIRTIO_CONFIG_S_NEEDS_RESET, //       test al, DEVICE_NEEDS_RESET
  0x75,
  0x04, //                              jnz out
  0xf3,
  0x90, //                              pause
  0xeb,
  0xe9, //                              jmp wait
  0xf4, //                               out: hlt
];

function u32(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24];
}

const work = mkdtempSync(join(tmpdir(), 'bring-up-virtio-'));
const disk = join(work, 'disk.img');
const sector0 = Buffer.alloc(4096);
sector0.write('hello from sector 0 of the disk\n');
writeFileSync(disk, sector0);

const guest = tinyVm(2 << 20);
const { memory } = guest;
const blk = new VirtioBlk({ path: disk, readOnly: true });
let interrupts = 0;
const transport = new VirtioMmioTransport(blk, {
  memory,
  interrupt: {
    trigger: () => {
      interrupts++;
    },
  },
  name: 'virtio-blk',
  onError: (e) => console.log(`device: DEVICE_NEEDS_RESET: ${e.message}`),
});
const buses = { pio: new Bus('PIO'), mmio: new Bus('MMIO') };
buses.mmio.insert(transport, VIRTIO_MMIO_BASE, VIRTIO_MMIO_WINDOW, 'virtio-blk');
console.log(`VMM: virtio-blk (virtio-mmio v2) at ${hex(VIRTIO_MMIO_BASE)}, over a ${sector0.length}-byte image`);

memory.write(CODE, Uint8Array.from(code));
enterLongMode(guest, CODE);
script.forEach(([offset, value], i) => {
  memory.writeU32(SCRIPT + 8 * i, offset);
  memory.writeU32(SCRIPT + 8 * i + 4, value);
});
memory.writeU32(SCRIPT + 8 * script.length, 0xffff_ffff);
console.log("the guest driver's register writes:");
for (const [offset, value, what] of script) console.log(`  [${hex(offset, 3)}] <- ${hex(value)}  ${what}`);

// The request: a virtio_blk_outhdr (type IN = read, sector 0), a 512-byte buffer, a status byte.
memory.writeU32(HEADER, 0);
memory.writeU64(HEADER + 8, 0n);
memory.writeU8(STATUS_BYTE, 0xff);
const descriptors = [
  { addr: HEADER, len: 16, flags: VRING_DESC_F_NEXT, next: 1, what: 'request header, device reads it (NEXT)' },
  { addr: corrupt ? 0xc000_0000 : DATA, len: 512, flags: VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, next: 2, what: 'data buffer, device writes it (NEXT|WRITE)' },
  { addr: STATUS_BYTE, len: 1, flags: VRING_DESC_F_WRITE, next: 0, what: 'status byte, device writes it (WRITE)' },
];
console.log(`descriptor table at ${hex(DESC)}:`);
descriptors.forEach((d, i) => {
  memory.writeU64(DESC + 16 * i, BigInt(d.addr));
  memory.writeU32(DESC + 16 * i + 8, d.len);
  memory.writeU16(DESC + 16 * i + 12, d.flags);
  memory.writeU16(DESC + 16 * i + 14, d.next);
  console.log(`  [${i}] addr=${hex(d.addr)} len=${d.len} flags=${d.flags} next=${d.next}: ${d.what}`);
});
memory.writeU16(AVAIL + 4, 0); // ring[0] = head of the chain, descriptor 0
console.log(`available ring at ${hex(AVAIL)}: ring[0] = 0 (the chain's head); the guest sets idx to 1 when it kicks`);

const threads = new VcpuThreads([guest.vcpu], buses);
threads.start();
// A guest that never halts (an exercise gone wrong: a device that never answers) is stopped, not waited on for ever.
const watchdog = setTimeout(() => {
  console.log('the guest has not halted after 60 s: stopping it');
  void threads.stop();
}, 60_000);
const [stop] = await threads.stopped;
clearTimeout(watchdog);
const usedIdx = memory.readU16(USED + 2);
console.log(`vCPU stopped: ${stop?.message}`);
console.log(`device status: ${hex(transport.deviceStatus)}, interrupts raised: ${interrupts}`);
console.log(`used ring at ${hex(USED)}: idx=${usedIdx}`);
if (usedIdx > 0) {
  console.log(`  ring[0] = { id: ${memory.readU32(USED + 4)}, len: ${memory.readU32(USED + 8)} } (bytes the device wrote: 512 data + 1 status)`);
  console.log(`  status byte: ${memory.readU8(STATUS_BYTE)} (0 = VIRTIO_BLK_S_OK)`);
  console.log(`  data: "${Buffer.from(memory.read(DATA, 512)).toString('latin1').replace(/\0+$/, '').trimEnd()}"`);
}
const refused = transport.lastError !== undefined;
if (refused) console.log(`the device refused the request and wants a reset; the VMM and the guest went on: ${transport.lastError.message}`);
transport.close();
blk.close();
guest.close();
rmSync(work, { recursive: true, force: true });
// Plain: the request must be served. With `corrupt`: it must be refused.
process.exitCode = stop?.reason === 'hlt' && (corrupt ? refused : usedIdx === 1 && !refused) ? 0 : 1;
