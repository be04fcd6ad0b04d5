// A 16550A UART as the Linux 8250 driver expects to find it on COM1: interrupt-driven transmit and
// receive (THRE and RDA interrupts, IIR priority and clear-on-read semantics), the divisor latch,
// FIFO control, scratch register, modem control/status and loopback, so that autoconfiguration,
// the THRE re-assertion test in serial8250_do_startup and the console all take the hardware path.
// Transmission is instantaneous: the transmitter is always empty once the guest's write returns.
import type { BusDevice } from './bus.js';
import type { Interrupt } from './interrupt.js';

const RBR_THR_DLL = 0;
const IER_DLM = 1;
const IIR_FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;
export const UART_REGISTERS = 8;

const IER_RDI = 0x01;
const IER_THRI = 0x02;
const IER_RLSI = 0x04;
const IER_MASK = 0x0f;

const IIR_NO_INT = 0x01;
const IIR_RLSI = 0x06;
const IIR_RDI = 0x04;
const IIR_THRI = 0x02;
const IIR_FIFO_ENABLED = 0xc0;

const FCR_ENABLE_FIFO = 0x01;
const FCR_CLEAR_RCVR = 0x02;

const LCR_DLAB = 0x80;

const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;
const MCR_MASK = 0x1f;

const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;

const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;
/** A connected, ready terminal: carrier, data set ready, clear to send. */
const MSR_CONNECTED = MSR_DCD | MSR_DSR | MSR_CTS;

/** Host-side input waiting for the guest; beyond it input is dropped and the guest sees an overrun. */
export const SERIAL_INPUT_LIMIT = 64 * 1024;

export class Serial16550 implements BusDevice {
  private ier = 0;
  private lcr = 0x03; // 8N1, the reset value firmware leaves
  private mcr = MCR_OUT2;
  private scr = 0;
  private divisor = 12; // 9600 baud from the 1.8432 MHz clock
  private fifoEnabled = false;
  private overrun = false;
  private thrEmptyPending = false;
  private interruptLine = false;
  private input: number[] = [];
  private inputHead = 0;

  constructor(
    private readonly irq: Interrupt,
    private readonly output: (bytes: Uint8Array) => void,
  ) {}

  /** Bytes typed at the host console, for the guest to read. */
  enqueueInput(bytes: Uint8Array): void {
    for (const b of bytes) {
      if (this.pendingInput() >= SERIAL_INPUT_LIMIT) {
        this.overrun = true;
        break;
      }
      this.input.push(b);
    }
    this.updateInterrupt();
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    data[0] = this.readRegister(offset);
  }

  write(offset: number, data: Uint8Array): void {
    if (data.length === 0) return;
    this.writeRegister(offset, data[0]!);
  }

  private pendingInput(): number {
    return this.input.length - this.inputHead;
  }

  private readRegister(offset: number): number {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (offset) {
      case RBR_THR_DLL:
        return dlab ? this.divisor & 0xff : this.receive();
      case IER_DLM:
        return dlab ? this.divisor >> 8 : this.ier;
      case IIR_FCR: {
        const iir = this.interruptIdentification();
        // Reading IIR while it reports THRE acknowledges that interrupt (16550A data sheet).
        if (iir === IIR_THRI) {
          this.thrEmptyPending = false;
          this.updateInterrupt();
        }
        return iir | (this.fifoEnabled ? IIR_FIFO_ENABLED : 0);
      }
      case LCR:
        return this.lcr;
      case MCR:
        return this.mcr;
      case LSR: {
        const lsr = LSR_THRE | LSR_TEMT | (this.pendingInput() > 0 ? LSR_DR : 0) | (this.overrun ? LSR_OE : 0);
        this.overrun = false;
        this.updateInterrupt();
        return lsr;
      }
      case MSR:
        return this.modemStatus();
      case SCR:
        return this.scr;
      default:
        return 0xff;
    }
  }

  private writeRegister(offset: number, value: number): void {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (offset) {
      case RBR_THR_DLL:
        if (dlab) this.divisor = (this.divisor & 0xff00) | value;
        else this.transmit(value);
        return;
      case IER_DLM:
        if (dlab) {
          this.divisor = (this.divisor & 0x00ff) | (value << 8);
        } else {
          const enablingThre = (value & IER_THRI) !== 0 && (this.ier & IER_THRI) === 0;
          this.ier = value & IER_MASK;
          // The transmitter is empty, so enabling its interrupt raises it at once; the 8250 driver tests this.
          if (enablingThre) this.thrEmptyPending = true;
          this.updateInterrupt();
        }
        return;
      case IIR_FCR:
        this.fifoEnabled = (value & FCR_ENABLE_FIFO) !== 0;
        if (value & FCR_CLEAR_RCVR) this.clearInput();
        this.updateInterrupt();
        return;
      case LCR:
        this.lcr = value;
        return;
      case MCR:
        this.mcr = value & MCR_MASK;
        return;
      case SCR:
        this.scr = value;
        return;
      default:
      // LSR and MSR are read-only; writes to them are ignored as on hardware.
    }
  }

  private transmit(byte: number): void {
    if (this.mcr & MCR_LOOP) {
      this.enqueueInput(Uint8Array.of(byte));
    } else {
      this.output(Uint8Array.of(byte));
    }
    this.thrEmptyPending = true;
    this.updateInterrupt();
  }

  private receive(): number {
    if (this.pendingInput() === 0) return 0;
    const byte = this.input[this.inputHead++]!;
    if (this.inputHead > 4096 && this.inputHead * 2 > this.input.length) {
      this.input = this.input.slice(this.inputHead);
      this.inputHead = 0;
    }
    this.updateInterrupt();
    return byte;
  }

  private clearInput(): void {
    this.input = [];
    this.inputHead = 0;
  }

  private modemStatus(): number {
    if (!(this.mcr & MCR_LOOP)) return MSR_CONNECTED;
    // Loopback wires the modem control outputs back to the status inputs.
    let msr = 0;
    if (this.mcr & MCR_RTS) msr |= MSR_CTS;
    if (this.mcr & MCR_DTR) msr |= MSR_DSR;
    if (this.mcr & MCR_OUT1) msr |= MSR_RI;
    if (this.mcr & MCR_OUT2) msr |= MSR_DCD;
    return msr;
  }

  /** The highest-priority pending interrupt (receiver line status > received data > THR empty). */
  private interruptIdentification(): number {
    if (this.ier & IER_RLSI && this.overrun) return IIR_RLSI;
    if (this.ier & IER_RDI && this.pendingInput() > 0) return IIR_RDI;
    if (this.ier & IER_THRI && this.thrEmptyPending) return IIR_THRI;
    return IIR_NO_INT;
  }

  /** The UART's INTR output is a level; the interrupt controller pin is edge-triggered, so raise an edge on each rise. */
  private updateInterrupt(): void {
    const level = this.interruptIdentification() !== IIR_NO_INT;
    if (level && !this.interruptLine) this.irq.trigger();
    this.interruptLine = level;
  }
}
