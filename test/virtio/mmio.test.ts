import { expect } from 'chai';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import {
  VIRTIO_BLK_T_IN,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_CONFIG_GENERATION,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_SHM_LEN_LOW,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VERSION,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  feature,
} from '../../src/virtio/abi.js';
import type { ActivatedQueues, DeviceSignals, VirtioDevice } from '../../src/virtio/device.js';
import { VirtioMmioTransport } from '../../src/virtio/mmio.js';
import type { NotificationSource } from '../../src/virtio/notification.js';
import { blkFixture, prepare, submit } from './blk-fixture.js';
import { InterruptCounter, TestDriver } from './driver.js';

const ACK = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const DRV = VIRTIO_CONFIG_S_DRIVER;
const FOK = VIRTIO_CONFIG_S_FEATURES_OK;
const DOK = VIRTIO_CONFIG_S_DRIVER_OK;

/** A device with two queues that records what the transport asks of it. */
class RecordingDevice implements VirtioDevice {
  readonly deviceType = 42;
  readonly features = feature(VIRTIO_F_VERSION_1) | feature(3);
  readonly queueMaxSizes = [8, 4];
  readonly configSize = 8;
  readonly config = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  signals!: DeviceSignals;
  activations: ActivatedQueues[] = [];
  notified: number[] = [];
  resets = 0;
  failNotify: Error | undefined;

  attach(signals: DeviceSignals): void {
    this.signals = signals;
  }
  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }
  writeConfig(offset: number, data: Uint8Array): void {
    this.config.set(data, offset);
  }
  activate(q: ActivatedQueues): void {
    this.activations.push(q);
  }
  queueNotify(index: number): void {
    if (this.failNotify) throw this.failNotify;
    this.notified.push(index);
  }
  reset(): void {
    this.resets++;
  }
}

function setup() {
  const memory = GuestMemory.shared([{ guestAddress: 0, size: 1 << 20 }]);
  const device = new RecordingDevice();
  const interrupt = new InterruptCounter();
  const errors: Error[] = [];
  const transport = new VirtioMmioTransport(device, { memory, interrupt, onError: (e) => errors.push(e) });
  return { memory, device, interrupt, errors, transport, driver: new TestDriver(transport, memory) };
}

describe('virtio-mmio transport', () => {
  it('identifies itself: magic "virt", version 2, device and vendor IDs, no shared memory', () => {
    const { driver } = setup();
    expect(driver.read(VIRTIO_MMIO_MAGIC_VALUE)).to.equal(0x74726976);
    expect(driver.read(VIRTIO_MMIO_VERSION)).to.equal(2);
    expect(driver.read(VIRTIO_MMIO_DEVICE_ID)).to.equal(42);
    expect(driver.read(VIRTIO_MMIO_VENDOR_ID)).to.not.equal(0);
    expect(driver.read(VIRTIO_MMIO_SHM_LEN_LOW)).to.equal(0xffff_ffff);
  });

  it('offers the device features plus VERSION_1, EVENT_IDX and INDIRECT_DESC', () => {
    const { driver } = setup();
    expect(driver.deviceFeatures()).to.equal(
      feature(VIRTIO_F_VERSION_1) | feature(3) | feature(VIRTIO_RING_F_EVENT_IDX) | feature(VIRTIO_RING_F_INDIRECT_DESC),
    );
  });

  it('refuses FEATURES_OK without VERSION_1 or with a feature it did not offer', () => {
    const { driver, transport } = setup();
    expect(driver.negotiate(feature(3))).to.equal(false);
    expect(driver.negotiate(feature(VIRTIO_F_VERSION_1) | feature(4))).to.equal(false);
    expect(driver.negotiate(feature(VIRTIO_F_VERSION_1) | feature(3))).to.equal(true);
    expect(transport.negotiatedFeatures).to.equal(feature(VIRTIO_F_VERSION_1) | feature(3));
  });

  it('ignores feature writes outside the negotiation window', () => {
    const { driver, transport } = setup();
    driver.negotiate(feature(VIRTIO_F_VERSION_1));
    driver.write(0x24, 0);
    driver.write(0x20, 0xffff_ffff); // after FEATURES_OK
    expect(transport.negotiatedFeatures).to.equal(feature(VIRTIO_F_VERSION_1));
  });

  it('ignores status transitions out of order and bits the driver may not set', () => {
    const { driver } = setup();
    driver.setStatus(DRV);
    expect(driver.status()).to.equal(0);
    driver.setStatus(ACK);
    driver.setStatus(ACK | DRV | FOK | DOK);
    expect(driver.status()).to.equal(ACK);
    driver.setStatus(ACK | VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(driver.status()).to.equal(ACK);
    driver.setStatus(ACK | DRV);
    driver.setStatus(DRV); // clearing a bit
    expect(driver.status()).to.equal(ACK | DRV);
  });

  it('keeps FAILED until a reset, and stops the device', () => {
    const { driver, device } = setup();
    driver.negotiate(feature(VIRTIO_F_VERSION_1));
    driver.setStatus(ACK | DRV | FOK | VIRTIO_CONFIG_S_FAILED);
    expect(driver.status() & VIRTIO_CONFIG_S_FAILED).to.not.equal(0);
    driver.driverOk();
    expect(driver.status() & DOK).to.equal(0);
    expect(device.activations).to.have.length(0);
    driver.setStatus(0);
    expect(driver.status()).to.equal(0);
    expect(device.resets).to.be.greaterThan(0);
  });

  it('reports queue sizes, accepts queue setup only between FEATURES_OK and DRIVER_OK, and activates ready queues', () => {
    const { driver, device } = setup();
    driver.write(VIRTIO_MMIO_QUEUE_SEL, 1);
    expect(driver.read(VIRTIO_MMIO_QUEUE_NUM_MAX)).to.equal(4);
    driver.write(VIRTIO_MMIO_QUEUE_SEL, 2);
    expect(driver.read(VIRTIO_MMIO_QUEUE_NUM_MAX)).to.equal(0);
    driver.write(VIRTIO_MMIO_QUEUE_SEL, 0);
    driver.write(VIRTIO_MMIO_QUEUE_READY, 1); // before FEATURES_OK: ignored
    expect(driver.read(VIRTIO_MMIO_QUEUE_READY)).to.equal(0);
    driver.negotiate(feature(VIRTIO_F_VERSION_1));
    driver.queue(0, 8);
    driver.driverOk();
    expect(driver.status()).to.equal(ACK | DRV | FOK | DOK);
    expect(device.activations).to.have.length(1);
    expect(device.activations[0]!.queues.map((q) => q?.size ?? null)).to.deep.equal([8, null]);
    driver.write(VIRTIO_MMIO_QUEUE_NUM, 2); // after DRIVER_OK: ignored
    driver.write(0x50, 0);
    driver.write(0x50, 1);
    driver.write(0x50, 7); // no such queue
    expect(device.notified).to.deep.equal([0, 0, 1], 'the look at the ready queue on DRIVER_OK, then the kicks');
  });

  it('reads and writes configuration space at any width and ignores accesses beyond it', () => {
    const { driver, transport } = setup();
    expect(driver.readConfig(2, 2)).to.equal(0x0403n);
    expect(driver.readConfig(0, 8)).to.equal(0x0807060504030201n);
    expect(driver.readConfig(6, 4)).to.equal(0n);
    transport.write(0x100 + 1, new Uint8Array([0xaa]));
    expect(driver.readConfig(0, 2)).to.equal(0xaa01n);
  });

  it('ignores register accesses that are not aligned 32-bit', () => {
    const { transport, driver } = setup();
    const b = new Uint8Array(2);
    transport.read(VIRTIO_MMIO_MAGIC_VALUE, b);
    expect([...b]).to.deep.equal([0, 0]);
    transport.write(VIRTIO_MMIO_STATUS, new Uint8Array([1, 0]));
    expect(driver.status()).to.equal(0);
  });

  it('sets interrupt status bits with an interrupt, and clears them on ACK', () => {
    const { driver, device, interrupt } = setup();
    device.signals.usedBuffers();
    expect(interrupt.count).to.equal(1);
    expect(driver.interruptStatus()).to.equal(VIRTIO_MMIO_INT_VRING);
    const generation = driver.read(VIRTIO_MMIO_CONFIG_GENERATION);
    device.signals.configChanged();
    expect(driver.read(VIRTIO_MMIO_CONFIG_GENERATION)).to.equal(generation + 1);
    expect(driver.interruptStatus()).to.equal(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
    driver.ack(VIRTIO_MMIO_INT_VRING);
    expect(driver.interruptStatus()).to.equal(VIRTIO_MMIO_INT_CONFIG);
  });

  it('keeps a cause raised after the driver read InterruptStatus when its ACK arrives later (posted write)', () => {
    const { driver, device, interrupt } = setup();
    device.signals.usedBuffers();
    const seen = driver.interruptStatus();
    expect(seen).to.equal(VIRTIO_MMIO_INT_VRING);
    // Device work runs before the driver's ACK of what it saw reaches the transport.
    device.signals.usedBuffers();
    driver.ack(seen);
    expect(interrupt.count).to.equal(2);
    expect(driver.interruptStatus(), 'the second interrupt must find its cause').to.equal(VIRTIO_MMIO_INT_VRING);
    driver.ack(VIRTIO_MMIO_INT_VRING);
    expect(driver.interruptStatus()).to.equal(0);
  });

  it('puts the device in DEVICE_NEEDS_RESET with a configuration interrupt when it fails, until the driver resets', () => {
    const { driver, device, interrupt, errors } = setup();
    driver.negotiate(feature(VIRTIO_F_VERSION_1));
    driver.queue(0, 8);
    driver.driverOk();
    expect(device.notified).to.deep.equal([0], 'the look at the ready queue on DRIVER_OK');
    device.failNotify = new Error('device broke');
    driver.write(0x50, 0);
    expect(driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET).to.not.equal(0);
    expect(driver.interruptStatus() & VIRTIO_MMIO_INT_CONFIG).to.not.equal(0);
    expect(interrupt.count).to.equal(1);
    expect(errors.map((e) => e.message)).to.deep.equal(['device broke']);
    device.failNotify = undefined;
    driver.write(0x50, 0);
    expect(device.notified).to.deep.equal([0], 'no kick reaches a broken device');
    driver.negotiate(feature(VIRTIO_F_VERSION_1));
    driver.queue(0, 8);
    driver.driverOk();
    driver.write(0x50, 0);
    expect(device.notified).to.deep.equal([0, 0, 0]);
  });

  for (const [what, size, layout] of [
    ['a queue size that is not a power of 2', 6, undefined],
    ['a queue size above the maximum', 16, undefined],
    ['a misaligned descriptor table', 8, { desc: 0x1008, avail: 0x2000, used: 0x3000 }],
    ['a misaligned used ring', 8, { desc: 0x1000, avail: 0x2000, used: 0x3002 }],
    ['rings outside guest RAM', 8, { desc: 0x1000, avail: 0x2000, used: 0x10_0000 - 8 }],
    ['rings at addresses beyond 2^53', 8, { desc: 2 ** 60, avail: 0x2000, used: 0x3000 }],
  ] as const) {
    it(`refuses to activate with ${what}: DEVICE_NEEDS_RESET`, () => {
      const { driver, device, errors } = setup();
      driver.negotiate(feature(VIRTIO_F_VERSION_1));
      driver.queue(0, size, layout);
      driver.driverOk();
      expect(driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET).to.not.equal(0);
      expect(device.activations).to.have.length(0);
      expect(errors).to.have.length(1);
    });
  }

  it('dispatches kicks from a notification source (ioeventfd) only while the device is live, and looks at every ready queue on DRIVER_OK', () => {
    const memory = GuestMemory.shared([{ guestAddress: 0, size: 1 << 20 }]);
    const device = new RecordingDevice();
    const kicks = new Map<number, () => void>();
    const attached: number[] = [];
    let detached = 0;
    const notifications: NotificationSource = {
      attach(address, queue, kick) {
        attached.push(address);
        kicks.set(queue, kick);
        return {
          detach: () => {
            detached++;
          },
        };
      },
      eventfd: () => expect.fail("a device on the transport's thread is given kicks, not eventfds"),
    };
    const transport = new VirtioMmioTransport(device, { memory, interrupt: new InterruptCounter(), notifications, baseAddress: 0xd000_0000 });
    expect(attached).to.deep.equal([0xd000_0050, 0xd000_0050]);
    kicks.get(1)!();
    expect(device.notified).to.deep.equal([]);
    const driver = new TestDriver(transport, memory);
    driver.negotiate(feature(VIRTIO_F_VERSION_1));
    driver.queue(1, 4);
    // A kick that overtook the (posted) DRIVER_OK write is not lost: activation looks at the queue.
    kicks.get(1)!();
    expect(device.notified).to.deep.equal([]);
    driver.driverOk();
    expect(device.notified).to.deep.equal([1]);
    kicks.get(1)!();
    expect(device.notified).to.deep.equal([1, 1]);
    transport.close();
    expect(detached).to.equal(2);
  });

  it('keeps other devices running when one device breaks', () => {
    const a = blkFixture();
    const b = blkFixture();
    try {
      const p = prepare(a, { type: VIRTIO_BLK_T_IN, inLength: 512 });
      a.memory.writeU64(a.queue.desc + 16 * p.head, 0xfff_0000_0000n); // buffer outside RAM
      a.queue.submit(p.head);
      expect(a.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET).to.not.equal(0);
      expect(submit(b, { type: VIRTIO_BLK_T_IN, inLength: 512 }).status).to.equal(0);
    } finally {
      a.close();
      b.close();
    }
  });
});
