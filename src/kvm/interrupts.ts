// The two ways a device raises an interrupt on a real VM: through an irqfd, which KVM injects with no
// ioctl on the path, or by pulsing a line on the in-kernel irqchip with KVM_IRQ_LINE.
import type { Interrupt } from '../devices/interrupt.js';
import { EventFd } from '../sys/eventfd.js';
import type { VirtualMachine } from './types.js';

/** Edge-triggered interrupt `gsi` through an irqfd bound to the VM. */
export class IrqfdInterrupt implements Interrupt {
  readonly eventfd: EventFd;

  constructor(
    private readonly vm: VirtualMachine,
    readonly gsi: number,
    eventfd = new EventFd(),
  ) {
    this.eventfd = eventfd;
    vm.irqfd(eventfd, gsi);
  }

  trigger(): void {
    this.eventfd.signal();
  }

  /** Unbinds the irqfd and closes its eventfd. */
  close(): void {
    this.vm.irqfdDeassign(this.eventfd, this.gsi);
    this.eventfd.close();
  }
}

/** Interrupt `irq` as a high-then-low pulse on the in-kernel PIC/IOAPIC line (an edge). */
export class IrqLineInterrupt implements Interrupt {
  constructor(
    private readonly vm: VirtualMachine,
    readonly irq: number,
  ) {}

  trigger(): void {
    this.vm.setIrqLine(this.irq, true);
    this.vm.setIrqLine(this.irq, false);
  }
}
