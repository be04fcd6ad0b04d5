// A process that starts a disk on its I/O thread, activates it, closes it, and has nothing else to do:
// it must end with status 0, as `ts-vmm boot` must after the guest powers off.
//   node dist/test/virtio/io-thread-exit.js IMAGE
import { EventFd } from '../../src/sys/eventfd.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { createVirtioMmioDevice } from '../../src/virtio/factory.js';
import { TestDriver } from './driver.js';

const memory = GuestMemory.anonymous([{ guestAddress: 0, size: 1 << 20 }]);
const interrupt = new EventFd();
const built = await createVirtioMmioDevice(
  { kind: 'blk', path: process.argv[2]! },
  {
    memory,
    interrupt: { trigger: () => interrupt.signal() },
    baseAddress: 0xd000_0000,
    ioThread: { interrupt },
  },
);
const driver = new TestDriver(built.transport, memory);
if (!driver.negotiate(driver.deviceFeatures())) throw new Error('features refused');
driver.queue(0, 16);
driver.driverOk();
await built.close();
interrupt.close();
