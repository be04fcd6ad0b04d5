// How a device raises its interrupt, independent of the mechanism: an irqfd (the kernel injects it
// without a trip through the VMM), a KVM_IRQ_LINE pulse, or a recorder in the mocked KVM.
export interface Interrupt {
  /** Raise an edge on the line. Safe to call from the device thread at any time. */
  trigger(): void;
}
