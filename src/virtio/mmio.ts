// virtio-mmio transport, version 2 (virtio 1.2 §4.2): the register window the guest's virtio_mmio
// driver programs, the device-status state machine, feature negotiation and the interrupt status.
import type { BusDevice } from '../devices/bus.js';
import type { Interrupt } from '../devices/interrupt.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_CONFIG_GENERATION,
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_INTERRUPT_ACK,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
  VIRTIO_MMIO_QUEUE_AVAIL_LOW,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_QUEUE_USED_HIGH,
  VIRTIO_MMIO_QUEUE_USED_LOW,
  VIRTIO_MMIO_SHM_BASE_HIGH,
  VIRTIO_MMIO_SHM_BASE_LOW,
  VIRTIO_MMIO_SHM_LEN_HIGH,
  VIRTIO_MMIO_SHM_LEN_LOW,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_MMIO_VERSION,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  feature,
} from './abi.js';
import type { DeviceSignals, VirtioDevice } from './device.js';
import { InterruptStatus } from './interrupt-status.js';
import type { NotificationHandle, NotificationSource } from './notification.js';
import { Virtqueue } from './virtqueue.js';

/** Size of the register window: registers up to 0x100, then the device configuration space. */
export const VIRTIO_MMIO_WINDOW = 0x1000;
/** Vendor ID the transport reports ("TSVM"); drivers do not interpret it. */
export const VIRTIO_MMIO_VENDOR = 0x4d565354;

interface QueueRegisters {
  size: number;
  ready: boolean;
  descTable: number;
  availRing: number;
  usedRing: number;
}

export interface VirtioMmioOptions {
  memory: GuestMemory;
  interrupt: Interrupt;
  /** Guest-physical base of the register window (for ioeventfd registration). */
  baseAddress?: number;
  /** An extra path for queue kicks (ioeventfd); MMIO QueueNotify writes are always handled. */
  notifications?: NotificationSource;
  /** The InterruptStatus word, when a device on another thread raises causes in it too. */
  interruptStatus?: InterruptStatus;
  /** Told why the device went to DEVICE_NEEDS_RESET. Defaults to a line on stderr. */
  onError?: (error: Error) => void;
  name?: string;
}

export class VirtioMmioTransport implements BusDevice {
  readonly name: string;
  private readonly memory: GuestMemory;
  private readonly interrupt: Interrupt;
  private readonly onError: (error: Error) => void;
  private readonly handles: NotificationHandle[] = [];
  private status = 0;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private queues: QueueRegisters[];
  /** Shared with the vCPU threads, which may answer InterruptStatus and InterruptACK themselves. */
  readonly interruptStatus: InterruptStatus;
  private generation = 0;
  private active = false;
  private error: Error | undefined;
  /** Queues whose device asked to be called again (see DeviceSignals.defer). */
  private readonly deferred = new Set<number>();

  constructor(
    readonly device: VirtioDevice,
    options: VirtioMmioOptions,
  ) {
    this.memory = options.memory;
    this.interrupt = options.interrupt;
    this.interruptStatus = options.interruptStatus ?? new InterruptStatus();
    this.name = options.name ?? `virtio-mmio(${device.deviceType})`;
    this.onError = options.onError ?? ((e) => process.stderr.write(`${this.name}: device needs reset: ${e.message}\n`));
    this.queues = this.freshQueues();
    const signals: DeviceSignals = {
      usedBuffers: () => this.raise(VIRTIO_MMIO_INT_VRING),
      configChanged: () => {
        this.generation = (this.generation + 1) >>> 0;
        this.raise(VIRTIO_MMIO_INT_CONFIG);
      },
      guard: (work) => this.guard(work),
      defer: (index) => this.defer(index),
      // Device work runs on this thread: a reset cannot be waiting while it does.
      stopRequested: () => false,
    };
    device.attach(signals);
    const notifications = options.notifications;
    if (notifications) {
      const notifyAddress = (options.baseAddress ?? 0) + VIRTIO_MMIO_QUEUE_NOTIFY;
      for (const i of device.queueMaxSizes.keys()) this.handles.push(notifications.attach(notifyAddress, i, () => this.kick(i)));
    }
  }

  /** Feature bits the transport itself implements, offered with every device. */
  static readonly transportFeatures = feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_RING_F_EVENT_IDX) | feature(VIRTIO_RING_F_INDIRECT_DESC);

  get deviceStatus(): number {
    return this.status;
  }

  get negotiatedFeatures(): bigint {
    return this.driverFeatures;
  }

  /** Why the device last entered DEVICE_NEEDS_RESET (cleared by a reset). */
  get lastError(): Error | undefined {
    return this.error;
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (offset >= VIRTIO_MMIO_CONFIG) {
      const at = offset - VIRTIO_MMIO_CONFIG;
      if (at + data.length <= this.device.configSize) this.device.readConfig(at, data);
      return;
    }
    // §4.2.2.2: the driver accesses registers with aligned 32-bit reads only; anything else reads 0.
    if (data.length !== 4 || offset % 4 !== 0) return;
    new DataView(data.buffer, data.byteOffset, 4).setUint32(0, this.register(offset), true);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset >= VIRTIO_MMIO_CONFIG) {
      const at = offset - VIRTIO_MMIO_CONFIG;
      if (at + data.length <= this.device.configSize) this.guard(() => this.device.writeConfig(at, data));
      return;
    }
    if (data.length !== 4 || offset % 4 !== 0) return;
    this.setRegister(offset, new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true));
  }

  /** Releases the notification sources. */
  close(): void {
    for (const h of this.handles.splice(0)) h.detach();
    this.active = false;
    this.device.reset();
  }

  private register(offset: number): number {
    const q = this.queues[this.queueSel];
    switch (offset) {
      case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
      case VIRTIO_MMIO_VERSION:
        return 2;
      case VIRTIO_MMIO_DEVICE_ID:
        return this.device.deviceType;
      case VIRTIO_MMIO_VENDOR_ID:
        return VIRTIO_MMIO_VENDOR;
      case VIRTIO_MMIO_DEVICE_FEATURES:
        return this.deviceFeaturesSel > 1 ? 0 : Number((this.offeredFeatures() >> BigInt(32 * this.deviceFeaturesSel)) & 0xffff_ffffn);
      case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return q ? this.device.queueMaxSizes[this.queueSel]! : 0;
      case VIRTIO_MMIO_QUEUE_READY:
        return q?.ready ? 1 : 0;
      case VIRTIO_MMIO_INTERRUPT_STATUS:
        return this.interruptStatus.read();
      case VIRTIO_MMIO_STATUS:
        return this.status;
      // No shared memory regions: a length of all ones says "this region does not exist" (§4.2.2).
      case VIRTIO_MMIO_SHM_LEN_LOW:
      case VIRTIO_MMIO_SHM_LEN_HIGH:
      case VIRTIO_MMIO_SHM_BASE_LOW:
      case VIRTIO_MMIO_SHM_BASE_HIGH:
        return 0xffff_ffff;
      case VIRTIO_MMIO_CONFIG_GENERATION:
        return this.generation;
      default:
        return 0;
    }
  }

  private setRegister(offset: number, value: number): void {
    switch (offset) {
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        this.deviceFeaturesSel = value;
        return;
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        this.driverFeaturesSel = value;
        return;
      case VIRTIO_MMIO_DRIVER_FEATURES:
        this.setDriverFeatures(value);
        return;
      case VIRTIO_MMIO_QUEUE_SEL:
        this.queueSel = value;
        return;
      case VIRTIO_MMIO_QUEUE_NUM:
        this.setQueue((q) => {
          q.size = value;
        });
        return;
      case VIRTIO_MMIO_QUEUE_READY:
        this.setQueueReady(value);
        return;
      case VIRTIO_MMIO_QUEUE_DESC_LOW:
        this.setQueue((q) => {
          q.descTable = low(q.descTable, value);
        });
        return;
      case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        this.setQueue((q) => {
          q.descTable = high(q.descTable, value);
        });
        return;
      case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
        this.setQueue((q) => {
          q.availRing = low(q.availRing, value);
        });
        return;
      case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        this.setQueue((q) => {
          q.availRing = high(q.availRing, value);
        });
        return;
      case VIRTIO_MMIO_QUEUE_USED_LOW:
        this.setQueue((q) => {
          q.usedRing = low(q.usedRing, value);
        });
        return;
      case VIRTIO_MMIO_QUEUE_USED_HIGH:
        this.setQueue((q) => {
          q.usedRing = high(q.usedRing, value);
        });
        return;
      case VIRTIO_MMIO_QUEUE_NOTIFY:
        this.kick(value);
        return;
      case VIRTIO_MMIO_INTERRUPT_ACK:
        this.interruptStatus.acknowledge(value);
        return;
      case VIRTIO_MMIO_STATUS:
        this.setStatus(value);
        return;
      default:
        return; // read-only or unknown registers ignore writes
    }
  }

  private offeredFeatures(): bigint {
    return this.device.features | VirtioMmioTransport.transportFeatures;
  }

  private setDriverFeatures(value: number): void {
    // Features are negotiated between DRIVER and FEATURES_OK only (§3.1.1).
    if (this.driverFeaturesSel > 1 || (this.status & ~VIRTIO_CONFIG_S_ACKNOWLEDGE) !== VIRTIO_CONFIG_S_DRIVER) return;
    const shift = BigInt(32 * this.driverFeaturesSel);
    this.driverFeatures = (this.driverFeatures & ~(0xffff_ffffn << shift)) | (BigInt(value >>> 0) << shift);
  }

  /** Queue registers are writable after FEATURES_OK, before DRIVER_OK, while the queue is not ready. */
  private configurableQueue(): QueueRegisters | undefined {
    const setup = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
    return this.status === setup ? this.queues[this.queueSel] : undefined;
  }

  private setQueue(update: (q: QueueRegisters) => void): void {
    const q = this.configurableQueue();
    if (q && !q.ready) update(q);
  }

  private setQueueReady(value: number): void {
    const q = this.configurableQueue();
    if (q) q.ready = value === 1;
  }

  private setStatus(value: number): void {
    if (value === 0) {
      this.reset();
      return;
    }
    // FAILED is sticky, and DEVICE_NEEDS_RESET is the device's bit: only a reset clears either.
    if (this.status & (VIRTIO_CONFIG_S_FAILED | VIRTIO_CONFIG_S_NEEDS_RESET) && !(value & VIRTIO_CONFIG_S_FAILED)) return;
    if (value & VIRTIO_CONFIG_S_FAILED) {
      this.status |= VIRTIO_CONFIG_S_FAILED;
      this.stop();
      return;
    }
    const current = this.status;
    const added = value & ~current;
    // The driver only ever adds the next bit of §3.1.1 and keeps the ones already set.
    if ((value & current) !== current) return;
    if (current === 0 && added === VIRTIO_CONFIG_S_ACKNOWLEDGE) this.status = value;
    else if (current === VIRTIO_CONFIG_S_ACKNOWLEDGE && added === VIRTIO_CONFIG_S_DRIVER) this.status = value;
    else if (current === (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER) && added === VIRTIO_CONFIG_S_FEATURES_OK) {
      // Refusing is leaving FEATURES_OK clear: the driver reads the status back and gives up (§3.1.1).
      if (this.featuresAcceptable()) this.status = value;
    } else if (current === (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK) && added === VIRTIO_CONFIG_S_DRIVER_OK) {
      this.status = value;
      this.activate();
    }
  }

  private featuresAcceptable(): boolean {
    const f = this.driverFeatures;
    return (f & ~this.offeredFeatures()) === 0n && (f & feature(VIRTIO_F_VERSION_1)) !== 0n;
  }

  private activate(): void {
    this.guard(() => {
      const features = {
        eventIdx: (this.driverFeatures & feature(VIRTIO_RING_F_EVENT_IDX)) !== 0n,
        indirect: (this.driverFeatures & feature(VIRTIO_RING_F_INDIRECT_DESC)) !== 0n,
      };
      const queues = this.queues.map((q, i) =>
        q.ready
          ? new Virtqueue(
              this.memory,
              { size: q.size, descTable: q.descTable, availRing: q.availRing, usedRing: q.usedRing },
              features,
              this.device.queueMaxSizes[i]!,
            )
          : null,
      );
      this.active = true;
      this.device.activate({ memory: this.memory, queues, features: this.driverFeatures });
      // One look at every ready queue: a kick through the notification source (an ioeventfd) does not
      // wait for the vCPU's posted register writes, so it can arrive before the DRIVER_OK it follows,
      // and was dropped. A look at a ring with nothing new in it does nothing.
      queues.forEach((queue, i) => {
        if (queue !== null) this.device.queueNotify(i);
      });
    });
  }

  /** Serves queue `index` again on a later turn of the event loop, once however often it is asked. */
  private defer(index: number): void {
    if (this.deferred.has(index)) return;
    this.deferred.add(index);
    setImmediate(() => {
      this.deferred.delete(index);
      this.kick(index);
    });
  }

  private kick(index: number): void {
    if (!this.active || index >= this.queues.length) return;
    this.guard(() => this.device.queueNotify(index));
  }

  /** Runs device work; any failure means the device cannot go on: DEVICE_NEEDS_RESET. */
  private guard(work: () => void): void {
    try {
      work();
    } catch (e) {
      this.needsReset(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private needsReset(error: Error): void {
    this.error = error;
    this.stop();
    this.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    this.onError(error);
    // §2.1.2: with DRIVER_OK set, the device must tell the driver through a configuration change.
    if (this.status & VIRTIO_CONFIG_S_DRIVER_OK) this.raise(VIRTIO_MMIO_INT_CONFIG);
  }

  private stop(): void {
    this.active = false;
    try {
      this.device.reset();
    } catch (e) {
      this.onError(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private reset(): void {
    this.stop();
    this.status = 0;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.driverFeatures = 0n;
    this.queueSel = 0;
    this.queues = this.freshQueues();
    this.interruptStatus.clear();
    this.error = undefined;
  }

  private raise(bit: number): void {
    this.interruptStatus.raise(bit);
    this.interrupt.trigger();
  }

  private freshQueues(): QueueRegisters[] {
    return this.device.queueMaxSizes.map((max) => ({ size: max, ready: false, descTable: 0, availRing: 0, usedRing: 0 }));
  }
}

const U32 = 0x1_0000_0000;
const low = (current: number, value: number): number => Math.floor(current / U32) * U32 + (value >>> 0);
const high = (current: number, value: number): number => (value >>> 0) * U32 + (current % U32);
