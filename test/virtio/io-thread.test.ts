import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { EventFd } from '../../src/sys/eventfd.js';
import { MockVm } from '../kvm/mock/mock-vm.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import {
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_ID_BLOCK,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_QUEUE_NOTIFY,
} from '../../src/virtio/abi.js';
import { createVirtioMmioDevice, type VirtioMmioDevice } from '../../src/virtio/factory.js';
import { InterruptStatus } from '../../src/virtio/interrupt-status.js';
import { IoThreadDevice } from '../../src/virtio/io-thread.js';
import { IoeventfdNotifications } from '../../src/virtio/ioeventfd.js';
import { VirtioMmioTransport } from '../../src/virtio/mmio.js';
import { type BlkFixture, type BlkRequest, prepare, tempImage } from './blk-fixture.js';
import { InterruptCounter, TestDriver } from './driver.js';

const BASE = 0xd000_0000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Threaded {
  file: string;
  built: VirtioMmioDevice;
  fixture: BlkFixture;
  interrupt: EventFd;
  vm: MockVm;
  errors: Error[];
  close(): Promise<void>;
}

async function threadedBlk(image: Uint8Array | number = 1 << 20): Promise<Threaded> {
  const file = tempImage(image);
  const memory = GuestMemory.anonymous([{ guestAddress: 0, size: 4 << 20 }]);
  const interrupt = new EventFd();
  const vm = new MockVm();
  const errors: Error[] = [];
  const built = await createVirtioMmioDevice(
    { kind: 'blk', path: file },
    {
      memory,
      interrupt: { trigger: () => interrupt.signal() },
      baseAddress: BASE,
      notifications: new IoeventfdNotifications(vm),
      ioThread: { interrupt },
      onError: (e) => errors.push(e),
    },
  );
  const driver = new TestDriver(built.transport, memory);
  if (!driver.negotiate(driver.deviceFeatures())) throw new Error('features refused');
  const queue = driver.queue(0, 16);
  driver.driverOk();
  const fixture = { file, memory, driver, queue, interrupt: new InterruptCounter(), errors } as unknown as BlkFixture;
  return {
    file,
    built,
    fixture,
    interrupt,
    vm,
    errors,
    close: async () => {
      await built.close();
      interrupt.close();
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    },
  };
}

/** Waits until `done()` holds, for at most `ms`. */
async function until(done: () => boolean, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !done(); await sleep(2)) {
    if (Date.now() > end) throw new Error(`not done within ${ms} ms`);
  }
}

/** Submits a request, kicked through the transport's QueueNotify, and waits for it in the used ring. */
async function request(t: Threaded, r: BlkRequest): Promise<{ status: number; data: Uint8Array; len: number }> {
  const f = t.fixture;
  const p = prepare(f, r);
  const before = f.queue.usedIdx();
  f.queue.submit(p.head);
  await until(() => f.queue.usedIdx() !== before);
  const used = f.queue.takeUsed();
  expect(used.map((u) => u.id)).to.deep.equal([p.head]);
  return { status: f.memory.readU8(p.status), data: f.memory.read(p.data, p.inLength), len: used[0]!.len };
}

describe('virtio-blk on an I/O thread', () => {
  let t: Threaded | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it('serves reads and writes off the main thread and raises the interrupt through the eventfd and InterruptStatus', async () => {
    const image = randomBytes(1 << 20);
    t = await threadedBlk(image);
    expect(t.fixture.driver.read(VIRTIO_MMIO_DEVICE_ID)).to.equal(VIRTIO_ID_BLOCK);
    expect(t.fixture.driver.readConfig(0, 8)).to.equal(BigInt((1 << 20) / 512));
    const read = await request(t, { type: VIRTIO_BLK_T_IN, sector: 4, inLength: 4096 });
    expect(Number(t.interrupt.take()), 'the interrupt, through the eventfd').to.equal(1);
    expect(read.status).to.equal(VIRTIO_BLK_S_OK);
    expect(read.len).to.equal(4097);
    expect(Buffer.from(read.data).equals(image.subarray(2048, 2048 + 4096))).to.equal(true);
    expect(t.fixture.driver.interruptStatus()).to.equal(VIRTIO_MMIO_INT_VRING);
    t.fixture.driver.ack(VIRTIO_MMIO_INT_VRING);
    const data = randomBytes(8192);
    expect((await request(t, { type: VIRTIO_BLK_T_OUT, sector: 10, out: data })).status).to.equal(VIRTIO_BLK_S_OK);
    const fd = fs.openSync(t.file, 'r');
    const onDisk = Buffer.alloc(8192);
    fs.readSync(fd, onDisk, 0, 8192, 10 * 512);
    fs.closeSync(fd);
    expect(onDisk.equals(data)).to.equal(true);
  });

  it('takes kicks from its own ioeventfds, one per queue on QueueNotify with the queue index as datamatch', async () => {
    t = await threadedBlk();
    expect(t.vm.ioEvents.map((e) => e.spec)).to.deep.equal([{ space: 'mmio', address: BASE + VIRTIO_MMIO_QUEUE_NOTIFY, length: 4, datamatch: 0n }]);
    const f = t.fixture;
    const p = prepare(f, { type: VIRTIO_BLK_T_IN, sector: 0, inLength: 512 });
    f.queue.offer(p.head);
    // The guest's QueueNotify write as KVM completes it: the eventfd, no exit.
    expect(t.vm.signalIoEvent('mmio', BASE + VIRTIO_MMIO_QUEUE_NOTIFY, new Uint8Array([0, 0, 0, 0]))).to.equal(true);
    await until(() => f.queue.usedIdx() === 1);
    expect(f.queue.takeUsed().map((u) => u.id)).to.deep.equal([p.head]);
  });

  it('stops touching the rings once a reset returns', async () => {
    t = await threadedBlk();
    const f = t.fixture;
    await request(t, { type: VIRTIO_BLK_T_IN, sector: 0, inLength: 512 });
    f.driver.setStatus(0);
    const p = prepare(f, { type: VIRTIO_BLK_T_IN, sector: 0, inLength: 512 });
    f.queue.offer(p.head);
    t.vm.signalIoEvent('mmio', BASE + VIRTIO_MMIO_QUEUE_NOTIFY, new Uint8Array(4));
    f.queue.notify();
    await sleep(100);
    expect(f.queue.takeUsed()).to.deep.equal([]);
    expect(f.memory.readU8(p.status)).to.equal(0xff);
    // A fresh negotiation brings it back.
    if (!f.driver.negotiate(f.driver.deviceFeatures())) throw new Error('features refused');
    f.queue = f.driver.queue(0, 16);
    f.driver.driverOk();
    expect((await request(t, { type: VIRTIO_BLK_T_IN, sector: 0, inLength: 512 })).status).to.equal(VIRTIO_BLK_S_OK);
  });

  it('puts the device in DEVICE_NEEDS_RESET with a configuration interrupt when the guest breaks its queue, and keeps the VMM running', async () => {
    t = await threadedBlk();
    const f = t.fixture;
    // An available index that jumps by more than the queue size.
    f.memory.writeU16(f.queue.avail + 2, 100);
    f.queue.notify();
    await until(() => (f.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0, 5000);
    expect(t.errors.map((e) => e.message)).to.deep.equal(['available index moved from 0 to 100, more than the queue size 16']);
    expect(f.driver.interruptStatus() & VIRTIO_MMIO_INT_CONFIG).to.not.equal(0);
    expect(Number(t.interrupt.take())).to.be.greaterThan(0);
  });

  it('refuses to start on a bad image, naming the file and the problem', async () => {
    const file = tempImage(1000);
    const memory = GuestMemory.anonymous([{ guestAddress: 0, size: 1 << 20 }]);
    const interrupt = new EventFd();
    try {
      let error: unknown;
      await createVirtioMmioDevice(
        { kind: 'blk', path: file },
        { memory, interrupt: { trigger: () => undefined }, baseAddress: BASE, ioThread: { interrupt } },
      ).catch((e: unknown) => {
        error = e;
      });
      expect(String(error)).to.match(/virtio-blk\(.*disk\.img\): disk image .*disk\.img is 1000 bytes, not a multiple of 512/);
    } finally {
      interrupt.close();
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });

  it('keeps obeying its control channel while the guest refills the ring without end: a reset returns at once', async function () {
    this.timeout(30000);
    const file = tempImage(randomBytes(1 << 20));
    const memory = GuestMemory.anonymous([{ guestAddress: 0, size: 4 << 20 }]);
    const interrupt = new EventFd();
    const interruptStatus = new InterruptStatus();
    const device = await IoThreadDevice.start(
      { module: new URL('./refilling-blk.js', import.meta.url).href, exportName: 'RefillingBlk', options: { path: file, refills: Infinity } },
      { memory, interruptStatus, interrupt, name: 'refilled disk' },
    );
    const errors: Error[] = [];
    const transport = new VirtioMmioTransport(device, { memory, interrupt: { trigger: () => undefined }, interruptStatus, onError: (e) => errors.push(e) });
    try {
      const driver = new TestDriver(transport, memory);
      if (!driver.negotiate(driver.deviceFeatures())) throw new Error('features refused');
      const queue = driver.queue(0, 16);
      driver.driverOk();
      const p = prepare({ driver, memory, queue } as unknown as BlkFixture, { type: VIRTIO_BLK_T_IN, sector: 0, inLength: 4096 });
      queue.submit(p.head);
      // The thread is in the guest's endless stream of requests.
      await until(() => queue.usedIdx() > 1000);
      driver.setStatus(0);
      expect(
        errors.map((e) => e.message),
        'the reset was acknowledged, not timed out',
      ).to.deep.equal([]);
      const after = queue.usedIdx();
      await sleep(50);
      expect(queue.usedIdx(), 'nothing served after the reset returned').to.equal(after);
    } finally {
      transport.close();
      await device.close();
      interrupt.close();
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });

  it('cuts short a long WRITE_ZEROES (zeroes written where the file system cannot zero a range) when a reset comes', async function () {
    // tmpfs has no FALLOC_FL_ZERO_RANGE: the device writes the zeroes itself, a megabyte at a time.
    if (!fs.existsSync('/dev/shm')) this.skip();
    const dir = fs.mkdtempSync('/dev/shm/ts-vmm-blk-');
    const file = path.join(dir, 'disk.img');
    const GiB = 1 << 30;
    fs.writeFileSync(file, '');
    fs.truncateSync(file, GiB);
    const memory = GuestMemory.anonymous([{ guestAddress: 0, size: 4 << 20 }]);
    const interrupt = new EventFd();
    const errors: Error[] = [];
    const built = await createVirtioMmioDevice(
      { kind: 'blk', path: file },
      {
        memory,
        interrupt: { trigger: () => undefined },
        baseAddress: BASE,
        ioThread: { interrupt },
        onError: (e) => errors.push(e),
      },
    );
    try {
      const driver = new TestDriver(built.transport, memory);
      if (!driver.negotiate(driver.deviceFeatures())) throw new Error('features refused');
      const queue = driver.queue(0, 16);
      driver.driverOk();
      const range = new Uint8Array(16);
      new DataView(range.buffer).setUint32(8, GiB / 512, true);
      const p = prepare({ driver, memory, queue } as unknown as BlkFixture, { type: VIRTIO_BLK_T_WRITE_ZEROES, out: range });
      queue.submit(p.head);
      await until(() => fs.statSync(file).blocks > 0);
      driver.setStatus(0);
      expect(errors.map((e) => e.message)).to.deep.equal([]);
      expect(memory.readU8(p.status), 'the request was dropped with its queue, not completed').to.equal(0xff);
      expect(fs.statSync(file).blocks * 512, 'bytes zeroed before the reset was honoured').to.be.below(GiB / 4);
    } finally {
      await built.close();
      interrupt.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lets a process that only started and closed a disk exit with status 0 (no shutdown promise left pending)', () => {
    const file = tempImage(1 << 20);
    try {
      const child = spawnSync(process.execPath, [new URL('./io-thread-exit.js', import.meta.url).pathname, file], { encoding: 'utf8', timeout: 15000 });
      expect({ status: child.status, stderr: child.stderr }).to.deep.equal({ status: 0, stderr: '' });
    } finally {
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });

  it('ends its thread and removes its ioeventfds on close', async () => {
    t = await threadedBlk();
    const { vm } = t;
    await t.close();
    t = undefined;
    expect(vm.ioEvents).to.deep.equal([]);
  });
});
