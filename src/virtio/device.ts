// What a virtio device (blk, vsock, ...) implements, independent of the transport that carries it.
import type { GuestMemory } from '../memory/guest-memory.js';
import type { Virtqueue } from './virtqueue.js';

/** What the transport hands a device when the driver sets DRIVER_OK. */
export interface ActivatedQueues {
  readonly memory: GuestMemory;
  /** One per queue the device declared, in order; null where the driver left a queue disabled. */
  readonly queues: readonly (Virtqueue | null)[];
  /** The feature bits both sides agreed on. */
  readonly features: bigint;
}

/** How a device talks back to its transport. */
export interface DeviceSignals {
  /** Raises the used-buffer interrupt. */
  usedBuffers(): void;
  /** Bumps the configuration generation and raises the configuration-change interrupt. */
  configChanged(): void;
  /**
   * Runs device work that did not start from a queue notification (a host socket event, a timer)
   * with the same protection: a failure puts the device in DEVICE_NEEDS_RESET instead of throwing.
   */
  guard(work: () => void): void;
  /**
   * The device ended a pass over queue `index` with work left, its budget per pass spent (vhost's
   * weight): queueNotify(index) is called again once other work (other devices, timers, the control
   * channel) has had its turn. The device leaves the rest in the ring; no notification is needed.
   */
  defer(index: number): void;
  /**
   * Whether a reset or close is waiting for the device's thread: work that can take long (zeroing a
   * range by writing) stops early, and the pass ends without completing the request.
   */
  stopRequested(): boolean;
}

export interface VirtioDevice {
  /** VIRTIO_ID_* */
  readonly deviceType: number;
  /** Feature bits offered, device-specific and transport ones (VIRTIO_F_VERSION_1 at least). */
  readonly features: bigint;
  /** Largest size of each queue; the length is the number of queues. */
  readonly queueMaxSizes: readonly number[];
  /** Called once when the transport is created. */
  attach(signals: DeviceSignals): void;
  /** Reads device configuration space; `offset` and `data.length` lie inside it (the transport checks). */
  readConfig(offset: number, data: Uint8Array): void;
  writeConfig(offset: number, data: Uint8Array): void;
  /** Size of the configuration space in bytes. */
  readonly configSize: number;
  /** Starts the device; may throw to refuse (the transport then sets DEVICE_NEEDS_RESET). */
  activate(queues: ActivatedQueues): void;
  /** Work is available on queue `index`. May throw VirtqueueError or any error: the transport catches it. */
  queueNotify(index: number): void;
  /** Stops all work and forgets the queues. Idempotent; the device may be activated again afterwards. */
  reset(): void;
}
