// The virtio-mmio InterruptStatus word in shared memory. Device work raises causes on whichever thread
// it runs; the driver's InterruptStatus reads and InterruptACK writes are answered from the same word
// by the transport or, with no hop to the device thread, by the vCPU thread that took the exit.
import type { BusDevice } from '../devices/bus.js';
import type { LocalDeviceFactory, LocalRange } from '../kvm/local-devices.js';
import { VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INTERRUPT_STATUS } from './abi.js';

const CAUSES = 0xff;
/** Causes raised since the driver last read the register sit 8 bits up. */
const UNREAD_SHIFT = 8;

export class InterruptStatus {
  private readonly word: Int32Array;

  constructor(readonly buffer = new SharedArrayBuffer(4)) {
    this.word = new Int32Array(buffer);
  }

  raise(causes: number): void {
    const bits = causes & CAUSES;
    Atomics.or(this.word, 0, bits | (bits << UNREAD_SHIFT));
  }

  /** The driver's read: the pending causes, which it may acknowledge from now on. */
  read(): number {
    return Atomics.and(this.word, 0, CAUSES) & CAUSES;
  }

  /**
   * Clears acknowledged causes, except those raised since the driver's last read. The driver
   * acknowledges what it read (Linux's vm_interrupt writes back exactly that); a cause raised later
   * is news to it. An ACK that is a posted write reaches the device after the vCPU has moved on, so
   * device work can run between the driver's ACK and its arrival: clearing such a cause would leave
   * the edge it raised finding a zero status, and that used buffer unseen until some later interrupt.
   */
  acknowledge(causes: number): void {
    for (;;) {
      const old = Atomics.load(this.word, 0);
      const cleared = causes & CAUSES & ~(old >>> UNREAD_SHIFT);
      if (Atomics.compareExchange(this.word, 0, old, old & ~cleared) === old) return;
    }
  }

  clear(): void {
    Atomics.store(this.word, 0, 0);
  }
}

const ACK_OFFSET = VIRTIO_MMIO_INTERRUPT_ACK - VIRTIO_MMIO_INTERRUPT_STATUS;

/** InterruptStatus and InterruptACK as a bus device whose offset 0 is VIRTIO_MMIO_INTERRUPT_STATUS. */
export function interruptRegisters(status: InterruptStatus): BusDevice {
  return {
    read(offset, data) {
      data.fill(0);
      if (data.length !== 4 || offset !== 0) return;
      new DataView(data.buffer, data.byteOffset, 4).setUint32(0, status.read(), true);
    },
    write(offset, data) {
      if (data.length !== 4 || offset !== ACK_OFFSET) return;
      status.acknowledge(new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true));
    },
  };
}

/** The two registers answered in every vCPU thread, for the transport whose window starts at `base`. */
export function interruptRegistersRange(base: number, status: InterruptStatus, name: string): LocalRange {
  return {
    space: 'mmio',
    base: base + VIRTIO_MMIO_INTERRUPT_STATUS,
    size: ACK_OFFSET + 4,
    name: `${name} interrupt status`,
    kind: 'module',
    module: new URL('./interrupt-status.js', import.meta.url).href,
    exportName: 'localInterruptRegisters',
    options: status.buffer,
  };
}

export const localInterruptRegisters: LocalDeviceFactory = ({ options }) => interruptRegisters(new InterruptStatus(options as SharedArrayBuffer));
