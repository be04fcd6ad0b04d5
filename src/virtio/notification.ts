// Queue notifications ("kicks") that bypass the MMIO exit path. The plain path needs nothing here: a
// QueueNotify write that reaches the bus is dispatched by the transport itself. A source such as a
// KVM ioeventfd (the kernel completes the guest's write and signals an eventfd) delivers the same
// kick without a trip through the vCPU thread.

export interface NotificationSource {
  /**
   * Starts delivering kicks for queue `queueIndex` of the device whose QueueNotify register is at
   * guest-physical `notifyAddress` (a 4-byte write of the queue index). `kick` must run on the thread
   * that owns the device.
   */
  attach(notifyAddress: number, queueIndex: number, kick: () => void): NotificationHandle;
}

export interface NotificationHandle {
  detach(): void;
}
