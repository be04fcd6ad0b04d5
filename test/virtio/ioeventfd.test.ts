import { expect } from 'chai';
import fs from 'node:fs';
import path from 'node:path';
import { Bus } from '../../src/devices/bus.js';
import { VcpuThreads } from '../../src/kvm/vcpu-threads.js';
import { VIRTIO_BLK_T_IN } from '../../src/virtio/abi.js';
import { VirtioBlk } from '../../src/virtio/blk.js';
import { IoeventfdNotifications } from '../../src/virtio/ioeventfd.js';
import { VIRTIO_MMIO_WINDOW, VirtioMmioTransport } from '../../src/virtio/mmio.js';
import { realModeVm } from '../kvm/real-mode-vm.js';
import { tempImage } from './blk-fixture.js';
import { InterruptCounter, TestDriver } from './driver.js';
import { until } from './vsock-guest.js';

const WINDOW = 0x20000;

describe('virtio-mmio queue kicks through an ioeventfd @kvm', () => {
  it('a guest QueueNotify write reaches the device with no MMIO exit, and the request completes', async () => {
    const code = [
      0xb8,
      0x00,
      0x20,
      0x8e,
      0xd8, //                         mov ax, 0x2000 ; mov ds, ax
      0x66,
      0xc7,
      0x06,
      0x50,
      0x00,
      0x00,
      0x00,
      0x00,
      0x00, // mov dword [0x50], 0   (QueueNotify, queue 0)
      0xf4, //                                                 hlt
    ];
    const guest = realModeVm(code, { entry: 0x1000 });
    const image = Buffer.alloc(1 << 20);
    image.write('sector two', 1024);
    const file = tempImage(image);
    const device = new VirtioBlk({ path: file });
    const transport = new VirtioMmioTransport(device, {
      memory: guest.memory,
      interrupt: new InterruptCounter(),
      baseAddress: WINDOW,
      notifications: new IoeventfdNotifications(guest.vm),
    });
    // The test plays the driver for setup, through the bus, with rings in the VM's own RAM.
    const driver = new TestDriver(transport, guest.memory, 0x4000);
    expect(driver.negotiate(driver.deviceFeatures())).to.equal(true);
    const q = driver.queue(0, 8);
    driver.driverOk();
    const header = driver.heap.alloc(16);
    guest.memory.writeU32(header, VIRTIO_BLK_T_IN);
    guest.memory.writeU64(header + 8, 2n);
    const data = driver.heap.alloc(512);
    const status = driver.heap.alloc(1);
    q.offer(
      q.chain([
        { address: header, length: 16 },
        { address: data, length: 512, writable: true },
        { address: status, length: 1, writable: true },
      ]),
    );

    const mmioExits: number[] = [];
    const buses = { pio: new Bus('pio'), mmio: new Bus('mmio') };
    buses.mmio.insert(
      {
        read: () => {},
        write: (offset) => {
          mmioExits.push(offset);
        },
      },
      WINDOW,
      VIRTIO_MMIO_WINDOW,
      'virtio-blk',
    );
    const threads = new VcpuThreads(guest.vcpus, buses);
    threads.start();
    const [stop] = await threads.stopped;
    expect(stop!.reason, stop!.message).to.equal('hlt');
    expect(mmioExits, 'the notify write never left the kernel').to.deep.equal([]);
    await until(() => q.usedIdx() === 1, 'the request to complete');
    expect(guest.memory.readU8(status)).to.equal(0);
    expect(Buffer.from(guest.memory.read(data, 10)).toString()).to.equal('sector two');
    transport.close();
    device.close();
    guest.close();
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  });
});
