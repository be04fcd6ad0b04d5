// A virtio-blk device on a temporary image, driven by the test driver.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { VIRTIO_BLK_F_RO } from '../../src/virtio/abi.js';
import { VirtioBlk } from '../../src/virtio/blk.js';
import { VirtioMmioTransport } from '../../src/virtio/mmio.js';
import { type Buffer, type DriverQueue, InterruptCounter, TestDriver } from './driver.js';

export interface BlkFixture {
  file: string;
  memory: GuestMemory;
  device: VirtioBlk;
  transport: VirtioMmioTransport;
  driver: TestDriver;
  queue: DriverQueue;
  interrupt: InterruptCounter;
  errors: Error[];
  close(): void;
}

export function tempImage(bytes: number | Uint8Array): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-vmm-blk-'));
  const file = path.join(dir, 'disk.img');
  if (typeof bytes === 'number') {
    fs.writeFileSync(file, '');
    fs.truncateSync(file, bytes);
  } else {
    fs.writeFileSync(file, bytes);
  }
  return file;
}

export interface BlkFixtureOptions {
  image?: number | Uint8Array;
  readOnly?: boolean;
  features?: (offered: bigint) => bigint;
  queueSize?: number;
  /** The device's largest queue size (QueueNumMax). */
  maxQueueSize?: number;
  /** Guest RAM as the VMM maps it (the default), or in SharedArrayBuffers as the mocked KVM has it. */
  memory?: 'mmap' | 'shared';
  /** Adds FIXTURE_ROM, read-only guest memory as the firmware slot is. */
  rom?: boolean;
}

/** Where the fixture's read-only memory is, when asked for: above its 4 MiB of RAM. */
export const FIXTURE_ROM = { guestAddress: 0x100_0000, size: 0x1_0000 };

export function blkFixture(options: BlkFixtureOptions = {}): BlkFixture {
  const file = tempImage(options.image ?? 1 << 20);
  const ram = [{ guestAddress: 0, size: 4 << 20 }, ...(options.rom ? [{ ...FIXTURE_ROM, readOnly: true }] : [])];
  const memory = options.memory === 'shared' ? GuestMemory.shared(ram) : GuestMemory.anonymous(ram);
  const device = new VirtioBlk({ path: file, readOnly: options.readOnly ?? false, serial: 'ts-vmm-test-disk', queueSize: options.maxQueueSize });
  const interrupt = new InterruptCounter();
  const errors: Error[] = [];
  const transport = new VirtioMmioTransport(device, { memory, interrupt, onError: (e) => errors.push(e) });
  const driver = new TestDriver(transport, memory);
  const offered = driver.deviceFeatures() & ~(1n << BigInt(VIRTIO_BLK_F_RO));
  if (!driver.negotiate(options.features ? options.features(offered) : offered)) throw new Error('features refused');
  const queue = driver.queue(0, options.queueSize ?? 16);
  driver.driverOk();
  return {
    file,
    memory,
    device,
    transport,
    driver,
    queue,
    interrupt,
    errors,
    close: () => {
      if (!fs.existsSync(file)) return;
      device.close();
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    },
  };
}

export interface BlkRequest {
  type: number;
  sector?: number;
  /** Data the device reads (OUT, DISCARD, WRITE_ZEROES). */
  out?: Uint8Array;
  /** Bytes the device may write before the status byte (IN, GET_ID). */
  inLength?: number;
}

export interface PreparedRequest {
  head: number;
  header: number;
  data: number;
  status: number;
  inLength: number;
}

/** Lays out a request as Linux does: header, data, status byte, each in its own descriptor. */
export function prepare(f: BlkFixture, r: BlkRequest, indirect = false): PreparedRequest {
  const heap = f.driver.heap;
  const header = heap.alloc(16);
  f.memory.writeU32(header, r.type);
  f.memory.writeU32(header + 4, 0);
  f.memory.writeU64(header + 8, BigInt(r.sector ?? 0));
  const inLength = r.inLength ?? 0;
  const dataLength = r.out ? r.out.length : inLength;
  const data = heap.alloc(Math.max(dataLength, 1), 512);
  if (r.out) f.memory.write(data, r.out);
  const status = heap.alloc(1, 1);
  f.memory.writeU8(status, 0xff);
  const buffers: Buffer[] = [{ address: header, length: 16 }];
  if (dataLength > 0) buffers.push({ address: data, length: dataLength, writable: !r.out });
  buffers.push({ address: status, length: 1, writable: true });
  const head = indirect ? f.queue.indirectChain(buffers, heap.alloc(16 * buffers.length)) : f.queue.chain(buffers);
  return { head, header, data, status, inLength };
}

export function submit(f: BlkFixture, r: BlkRequest, indirect = false): { status: number; data: Uint8Array; len: number } {
  const p = prepare(f, r, indirect);
  f.queue.submit(p.head);
  const used = f.queue.takeUsed();
  if (used.length !== 1 || used[0]!.id !== p.head) throw new Error(`expected one used element for head ${p.head}, got ${JSON.stringify(used)}`);
  return { status: f.memory.readU8(p.status), data: f.memory.read(p.data, p.inLength), len: used[0]!.len };
}
