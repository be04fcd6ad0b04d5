// One entry point for the VMM: build a virtio device behind a virtio-mmio transport from its spec.
import type { Interrupt } from '../devices/interrupt.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { EventFd } from '../sys/eventfd.js';
import { VirtioBlk, type VirtioBlkOptions } from './blk.js';
import type { VirtioDevice } from './device.js';
import { InterruptStatus } from './interrupt-status.js';
import { IoThreadDevice } from './io-thread.js';
import { VIRTIO_MMIO_WINDOW, type VirtioMmioOptions, VirtioMmioTransport } from './mmio.js';
import type { NotificationSource } from './notification.js';
import { VirtioVsock } from './vsock/device.js';

export type VirtioDeviceSpec = { kind: 'blk'; path: string; readOnly?: boolean; serial?: string } | { kind: 'vsock'; guestCid: number; udsPath: string };

export interface VirtioMmioContext {
  memory: GuestMemory;
  /** The device's interrupt line (an irqfd, a KVM_IRQ_LINE pulse, a test counter). */
  interrupt: Interrupt;
  /** Guest-physical base of the register window. */
  baseAddress: number;
  /** Queue kicks that bypass the MMIO exit (ioeventfd); QueueNotify writes on the bus always work. */
  notifications?: NotificationSource;
  /**
   * Serve disks on an I/O thread each: kicks from `notifications` (when given) go straight to the
   * thread as eventfds, and interrupts through `interrupt`, the eventfd behind the device's interrupt
   * (its irqfd).
   */
  ioThread?: { interrupt: EventFd };
  onError?: (error: Error) => void;
}

export interface VirtioMmioDevice {
  /** Put this on the MMIO bus at `baseAddress`, `size` bytes long. */
  readonly transport: VirtioMmioTransport;
  readonly size: number;
  readonly device: VirtioDevice;
  /** Stops the device and releases its files and sockets. */
  close(): Promise<void>;
}

export async function createVirtioMmioDevice(spec: VirtioDeviceSpec, context: VirtioMmioContext): Promise<VirtioMmioDevice> {
  const name = spec.kind === 'blk' ? `virtio-blk(${spec.path})` : `virtio-vsock(cid ${spec.guestCid})`;
  const options = { ...context, name };
  if (spec.kind === 'blk' && context.ioThread) {
    const interruptStatus = new InterruptStatus();
    const blk: VirtioBlkOptions = { path: spec.path, readOnly: spec.readOnly, serial: spec.serial };
    const device = await IoThreadDevice.start(
      { module: new URL('./blk.js', import.meta.url).href, exportName: VirtioBlk.name, options: blk },
      {
        memory: context.memory,
        interruptStatus,
        interrupt: context.ioThread.interrupt,
        notifications: context.notifications,
        baseAddress: context.baseAddress,
        name,
      },
    );
    // The thread waits on its kicks itself: none for the transport to watch.
    return behindTransport(device, { ...options, notifications: undefined, interruptStatus });
  }
  const device = spec.kind === 'blk' ? new VirtioBlk(spec) : await VirtioVsock.create({ guestCid: spec.guestCid, udsPath: spec.udsPath });
  return behindTransport(device, options);
}

/** The device behind a new transport; closing stops the transport, then releases the device. */
function behindTransport(device: VirtioDevice & { close(): void | Promise<void> }, options: VirtioMmioOptions): VirtioMmioDevice {
  const transport = new VirtioMmioTransport(device, options);
  return {
    transport,
    device,
    size: VIRTIO_MMIO_WINDOW,
    close: async () => {
      transport.close();
      await device.close();
    },
  };
}
