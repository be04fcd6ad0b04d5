// virtio-blk request throughput through the virtqueue (in process, no KVM) against plain pread/pwrite
// on the same file in the same run, at 4 KiB and 64 KiB. The driver side lays requests out as Linux
// does (header, data, status in three descriptors), keeps QUEUE_DEPTH requests in flight per kick,
// and reaps the used ring; the peer issues the same transfers with fs.readSync/fs.writeSync into as
// many buffers as the driver has requests in flight, laid out the same way in one shared guest-RAM-like
// block (one reused buffer would stay in the CPU cache and measure the cache, not the I/O path). The
// file is written once first so both sides work on the page cache.
//   npx tsc -p . && node dist/bench/virtio-blk.js [MiB per case]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../src/virtio/abi.js';
import { VirtioBlk } from '../src/virtio/blk.js';
import { VirtioMmioTransport } from '../src/virtio/mmio.js';
import { InterruptCounter, TestDriver } from '../test/virtio/driver.js';

const totalMiB = Number(process.argv[2] ?? 1024);
const QUEUE = 256;
const QUEUE_DEPTH = 64;
const FILE_BYTES = 256 << 20;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-vmm-bench-blk-'));
const file = path.join(dir, 'disk.img');
fs.writeFileSync(file, Buffer.alloc(FILE_BYTES, 0x5a));

/**
 * Both sides are synchronous on one thread, so CPU time (user + system) is what a pass costs; unlike
 * wall time it does not count the waits for a CPU on a loaded host.
 */
function cpuSeconds(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1e6;
}

/** The driver side: QUEUE_DEPTH requests per kick, each header + data + status. */
function virtioRunner(requestBytes: number, type: number): { run(bytes: number): number; close(): void } {
  const memory = GuestMemory.shared([{ guestAddress: 0, size: 16 << 20 }]);
  const device = new VirtioBlk({ path: file });
  const transport = new VirtioMmioTransport(device, { memory, interrupt: new InterruptCounter() });
  const driver = new TestDriver(transport, memory);
  if (!driver.negotiate(driver.deviceFeatures())) throw new Error('features refused');
  const q = driver.queue(0, QUEUE);
  driver.driverOk();
  // One fixed layout per slot: header, data and status of request i live in descriptors 3i..3i+2.
  const slots = Array.from({ length: QUEUE_DEPTH }, (_, i) => {
    const header = driver.heap.alloc(16);
    const data = driver.heap.alloc(requestBytes, 4096);
    const status = driver.heap.alloc(1, 1);
    memory.writeU32(header, type);
    q.writeDesc(3 * i, header, 16, VRING_DESC_F_NEXT, 3 * i + 1);
    q.writeDesc(3 * i + 1, data, requestBytes, VRING_DESC_F_NEXT | (type === VIRTIO_BLK_T_IN ? VRING_DESC_F_WRITE : 0), 3 * i + 2);
    q.writeDesc(3 * i + 2, status, 1, VRING_DESC_F_WRITE, 0);
    return { head: 3 * i, header };
  });
  const sectorsPerRequest = requestBytes / 512;
  const fileSectors = FILE_BYTES / 512;
  let sector = 0;
  return {
    run(bytes) {
      const start = process.cpuUsage();
      for (let done = 0; done < bytes; done += requestBytes * QUEUE_DEPTH) {
        for (const s of slots) {
          memory.writeU64(s.header + 8, BigInt(sector));
          sector = (sector + sectorsPerRequest) % fileSectors;
        }
        q.submit(...slots.map((s) => s.head));
        if (q.takeUsed().length !== QUEUE_DEPTH) throw new Error('requests were not completed');
      }
      return cpuSeconds(start);
    },
    close: () => device.close(),
  };
}

/** The peer: the same transfers with pread/pwrite into QUEUE_DEPTH rotating buffers. */
function plainRunner(requestBytes: number, type: number): { run(bytes: number): number; close(): void } {
  const fd = fs.openSync(file, 'r+');
  const memory = new Uint8Array(new SharedArrayBuffer(16 << 20));
  const stride = Math.ceil((requestBytes + 4096) / 4096) * 4096;
  const buffers = Array.from({ length: QUEUE_DEPTH }, (_, k) => memory.subarray(k * stride, k * stride + requestBytes));
  let offset = 0;
  let i = 0;
  return {
    run(bytes) {
      const start = process.cpuUsage();
      for (let done = 0; done < bytes; done += requestBytes) {
        const buffer = buffers[i++ % QUEUE_DEPTH]!;
        if (type === VIRTIO_BLK_T_IN) fs.readSync(fd, buffer, 0, requestBytes, offset);
        else fs.writeSync(fd, buffer, 0, requestBytes, offset);
        offset = (offset + requestBytes) % FILE_BYTES;
      }
      return cpuSeconds(start);
    },
    close: () => fs.closeSync(fd),
  };
}

// Short slices, alternating between the two, so both see the same background load on a busy host.
const SLICE = 16 << 20;
console.log(`virtio-blk vs pread/pwrite: ${totalMiB} MiB each, alternating ${SLICE >> 20} MiB slices, queue depth ${QUEUE_DEPTH}, MB per CPU-second`);
console.log('| request | op | virtio-blk MB/s | pread/pwrite MB/s | ratio |');
console.log('|---|---|---|---|---|');
for (const size of [4096, 65536]) {
  for (const [op, type] of [['read', VIRTIO_BLK_T_IN], ['write', VIRTIO_BLK_T_OUT]] as const) {
    const virtio = virtioRunner(size, type);
    const plain = plainRunner(size, type);
    virtio.run(SLICE); // warm-up
    plain.run(SLICE);
    let tv = 0;
    let tp = 0;
    for (let done = 0; done < totalMiB << 20; done += SLICE) {
      tv += virtio.run(SLICE);
      tp += plain.run(SLICE);
    }
    virtio.close();
    plain.close();
    const mbV = (totalMiB * 1.048576) / tv;
    const mbP = (totalMiB * 1.048576) / tp;
    console.log(`| ${size / 1024} KiB | ${op} | ${mbV.toFixed(0)} | ${mbP.toFixed(0)} | ${(mbV / mbP).toFixed(2)} |`);
  }
}
fs.rmSync(dir, { recursive: true, force: true });
