// Queue notifications ("kicks") that bypass the MMIO exit path. The plain path needs nothing here: a
// QueueNotify write that reaches the bus is dispatched by the transport itself. A source such as a
// KVM ioeventfd (the kernel completes the guest's write and signals an eventfd) delivers the same
// kick without a trip through the vCPU thread, to whichever thread serves the device: the source
// watches the eventfd for a device on this thread, or hands it over to a device's own I/O thread.
import type { EventFd } from '../sys/eventfd.js';

export interface NotificationSource {
  /**
   * Starts delivering kicks for queue `queueIndex` of the device whose QueueNotify register is at
   * guest-physical `notifyAddress` (a 4-byte write of the queue index). `kick` must run on the thread
   * that owns the device.
   */
  attach(notifyAddress: number, queueIndex: number, kick: () => void): NotificationHandle;
  /**
   * The same kicks as an eventfd, for a device served on a thread of its own, which waits on it there:
   * a read that returns non-zero is a kick (several guest writes between two reads are one).
   */
  eventfd(notifyAddress: number, queueIndex: number): QueueEventFd;
}

export interface NotificationHandle {
  detach(): void;
}

export interface QueueEventFd extends NotificationHandle {
  readonly eventfd: EventFd;
}
