// Queue kicks through KVM ioeventfds: the kernel completes the guest's 4-byte QueueNotify write of the
// queue index (datamatch) without an exit, signals an eventfd, and the eventfd poller hands the signal
// to the device thread, so the vCPU never waits for the device.
import { EventFd } from '../sys/eventfd.js';
import { type EventFdPoller, eventFdPoller } from '../sys/eventfd-poller.js';
import type { IoEventSpec, VirtualMachine } from '../kvm/types.js';
import type { NotificationHandle, NotificationSource } from './notification.js';

export class IoeventfdNotifications implements NotificationSource {
  constructor(private readonly vm: VirtualMachine, private readonly poller: EventFdPoller = eventFdPoller()) {}

  attach(notifyAddress: number, queueIndex: number, kick: () => void): NotificationHandle {
    const eventfd = new EventFd();
    const spec: IoEventSpec = { space: 'mmio', address: notifyAddress, length: 4, datamatch: BigInt(queueIndex) };
    try {
      this.vm.ioeventfd(eventfd, spec);
    } catch (e) {
      eventfd.close();
      throw e;
    }
    // Reading the counter clears it; several guest writes since the last read are one kick.
    this.poller.watch(eventfd.fd, () => {
      if (eventfd.take() > 0n) kick();
    });
    return {
      detach: () => {
        this.poller.unwatch(eventfd.fd);
        this.vm.ioeventfdDeassign(eventfd, spec);
        eventfd.close();
      },
    };
  }
}
