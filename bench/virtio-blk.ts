// virtio-blk request throughput through the virtqueue (in process, no KVM) against plain file I/O on
// the same file in the same run: 4 KiB and 64 KiB requests in one data buffer each, and the largest
// request Linux sends for a 1 MiB O_DIRECT transfer, 254 scattered 4 KiB pages (seg_max) in an
// indirect table. The driver side lays requests out as Linux does (header, data, status), keeps a
// queue depth of requests in flight per kick, and reaps the used ring; only the kick, in which the
// device serves the whole ring, is timed (the rest is the guest's work). The peer issues the same
// transfers with fs.readSync/writeSync (fs.readvSync/writevSync for the scattered pages) into buffers
// laid out the same way in guest RAM mapped as the VMM maps it (one reused buffer would stay in the
// CPU cache and measure the cache, not the I/O path). The file is written once first so both sides
// work on the page cache.
//   npm run build && node dist/bench/virtio-blk.js [MiB per case]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../src/virtio/abi.js';
import { VirtioBlk } from '../src/virtio/blk.js';
import { VirtioMmioTransport } from '../src/virtio/mmio.js';
import { InterruptCounter, TestDriver } from '../test/virtio/driver.js';

const totalMiB = Number(process.argv[2] ?? 1024);
const QUEUE = 256;
const FILE_BYTES = 256 << 20;
const RAM_BYTES = 64 << 20;
const PAGE = 4096;

interface Case {
  label: string;
  /** Data buffers per request, each `segmentBytes` long; more than one are scattered (a page apart). */
  segments: number;
  segmentBytes: number;
  /** Requests in flight per kick. */
  depth: number;
}

const CASES: Case[] = [
  { label: '4 KiB', segments: 1, segmentBytes: 4096, depth: 64 },
  { label: '64 KiB', segments: 1, segmentBytes: 65536, depth: 64 },
  { label: '1016 KiB in 254 pages', segments: 254, segmentBytes: PAGE, depth: 8 },
];

/** Where each request's data segments live in guest RAM: the same for both sides. */
function dataLayout(c: Case, firstAddress: number): number[][] {
  const stride = c.segments === 1 ? Math.ceil((c.segmentBytes + PAGE) / PAGE) * PAGE : 2 * c.segmentBytes;
  const perRequest = c.segments * stride;
  return Array.from({ length: c.depth }, (_, r) => Array.from({ length: c.segments }, (_, k) => firstAddress + r * perRequest + k * stride));
}

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

/** The driver side: `depth` requests per kick, each header + data + status (indirect when scattered). */
function virtioRunner(c: Case, type: number): { run(bytes: number): number; close(): void } {
  const memory = GuestMemory.anonymous([{ guestAddress: 0, size: RAM_BYTES }]);
  const device = new VirtioBlk({ path: file });
  const transport = new VirtioMmioTransport(device, { memory, interrupt: new InterruptCounter() });
  const driver = new TestDriver(transport, memory);
  if (!driver.negotiate(driver.deviceFeatures())) throw new Error('features refused');
  const q = driver.queue(0, QUEUE);
  driver.driverOk();
  const dataFlags = type === VIRTIO_BLK_T_IN ? VRING_DESC_F_WRITE : 0;
  const layout = dataLayout(c, RAM_BYTES / 2);
  // One fixed layout per slot: request i starts at descriptor 3i (its indirect table, when scattered).
  const slots = layout.map((data, i) => {
    const header = driver.heap.alloc(16);
    const status = driver.heap.alloc(1, 1);
    memory.writeU32(header, type);
    const buffers = [
      { address: header, length: 16, flags: 0 },
      ...data.map((address) => ({ address, length: c.segmentBytes, flags: dataFlags })),
      { address: status, length: 1, flags: VRING_DESC_F_WRITE },
    ];
    const indirect = buffers.length > 3;
    const table = indirect ? driver.heap.alloc(16 * buffers.length, 16) : q.desc;
    const first = indirect ? 0 : 3 * i;
    for (const [k, b] of buffers.entries())
      q.writeDesc(first + k, b.address, b.length, b.flags | (k + 1 < buffers.length ? VRING_DESC_F_NEXT : 0), first + k + 1, table);
    if (indirect) q.writeDesc(3 * i, table, 16 * buffers.length, VRING_DESC_F_INDIRECT, 0);
    return { head: 3 * i, header };
  });
  const requestBytes = c.segments * c.segmentBytes;
  const sectorsPerRequest = requestBytes / 512;
  const fileSectors = Math.floor(FILE_BYTES / requestBytes) * sectorsPerRequest;
  let sector = 0;
  return {
    run(bytes) {
      const heads = slots.map((s) => s.head);
      let seconds = 0;
      for (let done = 0; done < bytes; done += requestBytes * c.depth) {
        for (const s of slots) {
          memory.writeU64(s.header + 8, BigInt(sector));
          sector = (sector + sectorsPerRequest) % fileSectors;
        }
        q.offer(...heads);
        // Only the device's work is timed: the kick serves the whole ring.
        const start = process.cpuUsage();
        q.notify();
        seconds += cpuSeconds(start);
        if (q.takeUsed().length !== c.depth) throw new Error('requests were not completed');
      }
      return seconds;
    },
    close: () => device.close(),
  };
}

/** The peer: the same transfers with pread/pwrite (preadv/pwritev when scattered) into the same layout. */
function plainRunner(c: Case, type: number): { run(bytes: number): number; close(): void } {
  const fd = fs.openSync(file, 'r+');
  const memory = GuestMemory.anonymous([{ guestAddress: 0, size: RAM_BYTES }]);
  const requests = dataLayout(c, RAM_BYTES / 2).map((data) => data.map((address) => memory.slice(address, c.segmentBytes)));
  const requestBytes = c.segments * c.segmentBytes;
  const fileBytes = Math.floor(FILE_BYTES / requestBytes) * requestBytes;
  let offset = 0;
  let i = 0;
  return {
    run(bytes) {
      const start = process.cpuUsage();
      for (let done = 0; done < bytes; done += requestBytes) {
        const buffers = requests[i++ % c.depth]!;
        if (c.segments === 1) {
          if (type === VIRTIO_BLK_T_IN) fs.readSync(fd, buffers[0]!, 0, requestBytes, offset);
          else fs.writeSync(fd, buffers[0]!, 0, requestBytes, offset);
        } else if (type === VIRTIO_BLK_T_IN) fs.readvSync(fd, buffers, offset);
        else fs.writevSync(fd, buffers, offset);
        offset = (offset + requestBytes) % fileBytes;
      }
      return cpuSeconds(start);
    },
    close: () => fs.closeSync(fd),
  };
}

// Short slices, alternating between the two, so both see the same background load on a busy host.
const SLICE = 16 << 20;
console.log(`virtio-blk vs plain file I/O: ${totalMiB} MiB each, alternating slices of about ${SLICE >> 20} MiB, MB per CPU-second`);
console.log('| request | op | virtio-blk MB/s | plain file I/O MB/s | ratio |');
console.log('|---|---|---|---|---|');
for (const c of CASES) {
  // Whole kicks per slice.
  const kick = c.segments * c.segmentBytes * c.depth;
  const slice = Math.max(1, Math.round(SLICE / kick)) * kick;
  for (const [op, type] of [
    ['read', VIRTIO_BLK_T_IN],
    ['write', VIRTIO_BLK_T_OUT],
  ] as const) {
    const virtio = virtioRunner(c, type);
    const plain = plainRunner(c, type);
    virtio.run(slice); // warm-up
    plain.run(slice);
    let tv = 0;
    let tp = 0;
    let moved = 0;
    for (; moved < totalMiB * 2 ** 20; moved += slice) {
      tv += virtio.run(slice);
      tp += plain.run(slice);
    }
    virtio.close();
    plain.close();
    const mbV = moved / 1e6 / tv;
    const mbP = moved / 1e6 / tp;
    console.log(`| ${c.label} | ${op} | ${mbV.toFixed(0)} | ${mbP.toFixed(0)} | ${(mbV / mbP).toFixed(2)} |`);
  }
}
fs.rmSync(dir, { recursive: true, force: true });
