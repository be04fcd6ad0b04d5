// Queue kicks through KVM ioeventfds: the kernel completes the guest's 4-byte QueueNotify write of the
// queue index (datamatch) without an exit and signals an eventfd, which the eventfd poller hands to
// the device thread, or which a device's I/O thread waits on itself; either way the vCPU never waits
// for the device.
import { EventFd } from '../sys/eventfd.js';
import { type EventFdPoller, eventFdPoller } from '../sys/eventfd-poller.js';
import type { IoEventSpec, VirtualMachine } from '../kvm/types.js';
import type { NotificationHandle, NotificationSource, QueueEventFd } from './notification.js';

export class IoeventfdNotifications implements NotificationSource {
  /** @param poller watches the eventfds of devices on this thread (the shared poller, started on first use) */
  constructor(
    private readonly vm: VirtualMachine,
    private poller?: EventFdPoller,
  ) {}

  eventfd(notifyAddress: number, queueIndex: number): QueueEventFd {
    const eventfd = new EventFd();
    const spec: IoEventSpec = { space: 'mmio', address: notifyAddress, length: 4, datamatch: BigInt(queueIndex) };
    try {
      this.vm.ioeventfd(eventfd, spec);
    } catch (e) {
      eventfd.close();
      throw e;
    }
    return {
      eventfd,
      detach: () => {
        this.vm.ioeventfdDeassign(eventfd, spec);
        eventfd.close();
      },
    };
  }

  attach(notifyAddress: number, queueIndex: number, kick: () => void): NotificationHandle {
    const queue = this.eventfd(notifyAddress, queueIndex);
    this.poller ??= eventFdPoller();
    const poller = this.poller;
    // Reading the counter clears it; several guest writes since the last read are one kick.
    poller.watch(queue.eventfd.fd, () => {
      if (queue.eventfd.take() > 0n) kick();
    });
    return {
      detach: () => {
        poller.unwatch(queue.eventfd.fd);
        queue.detach();
      },
    };
  }
}
