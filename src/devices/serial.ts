// A 16550A UART as the Linux 8250 driver expects to find it on COM1: interrupt-driven transmit and
// receive (THRE and RDA interrupts, IIR priority and clear-on-read semantics), the divisor latch,
// FIFO control, scratch register, modem control/status and loopback, so that autoconfiguration,
// the THRE re-assertion test in serial8250_do_startup and the console all take the hardware path.
// Transmission is instantaneous: the transmitter is always empty once the guest's write returns.
//
// The registers, the receive FIFO and a transmit ring live in shared memory behind a lock, so every
// vCPU thread answers the UART itself: the console's status poll and data write per character cost
// no trip to the device thread (three thread wake-ups a character, which made the console the slowest
// part of a boot that is not quiet). The device thread adds host input and takes what the guest sent.
import type { BusDevice } from './bus.js';
import type { Interrupt } from './interrupt.js';
import { EventFd } from '../sys/eventfd.js';
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
/** Transmitted bytes the device thread has not taken yet; a full ring holds the transmitting vCPU. */
export const SERIAL_OUTPUT_RING = 64 * 1024;
/**
 * How long a transmitting vCPU waits for room before the byte is dropped: a device thread that takes
 * nothing for this long is stopped or stuck, and the guest must not hang on it.
 */
const OUTPUT_ROOM_WAIT_MS = 100;
/** How long output gathers after a hand-over before the next: the console's added latency at most. */
const OUTPUT_BATCH_MS = 4;

// Words of the shared state. The rings' head and tail count bytes modulo 2^32.
const LOCK = 0;
const W_IER = 1;
const W_LCR = 2;
const W_MCR = 3;
const W_SCR = 4;
const W_DIVISOR = 5;
const W_FIFO = 6;
const W_OVERRUN = 7;
const W_THRE_PENDING = 8;
const W_LINE = 9;
const IN_HEAD = 10;
const IN_TAIL = 11;
const OUT_HEAD = 12;
const OUT_TAIL = 13;
/** 1 while transmitted bytes wait for the device thread and it has been told so. */
const OUT_DOORBELL = 14;
const OUT_DROPPED = 15;
const WORDS = 16;
const INPUT_AT = WORDS * 4;
const OUTPUT_AT = INPUT_AT + SERIAL_INPUT_LIMIT;
const STATE_BYTES = OUTPUT_AT + SERIAL_OUTPUT_RING;

const UNLOCKED = 0;
const LOCKED = 1;

/** What a vCPU thread needs to build its view of the UART: the shared state and the interrupt's eventfd. */
export interface LocalSerialOptions {
  state: SharedArrayBuffer;
  interruptFd: number;
}

export class Serial16550 implements BusDevice {
  readonly state: SharedArrayBuffer;
  private readonly words: Int32Array;
  private readonly input: Uint8Array;
  private readonly output: Uint8Array;

  /** A UART in its reset state, or another thread's view of `state`. */
  constructor(
    private readonly irq: Interrupt,
    state?: SharedArrayBuffer,
  ) {
    this.state = state ?? new SharedArrayBuffer(STATE_BYTES);
    if (this.state.byteLength !== STATE_BYTES) throw new RangeError(`UART state of ${this.state.byteLength} bytes, expected ${STATE_BYTES}`);
    this.words = new Int32Array(this.state, 0, WORDS);
    this.input = new Uint8Array(this.state, INPUT_AT, SERIAL_INPUT_LIMIT);
    this.output = new Uint8Array(this.state, OUTPUT_AT, SERIAL_OUTPUT_RING);
    if (state === undefined) {
      this.words[W_LCR] = 0x03; // 8N1, the reset value firmware leaves
      this.words[W_MCR] = MCR_OUT2;
      this.words[W_DIVISOR] = 12; // 9600 baud from the 1.8432 MHz clock
    }
  }

  /** Bytes typed at the host console, for the guest to read. */
  enqueueInput(bytes: Uint8Array): void {
    this.locked(() => {
      this.receiveBytes(bytes);
      this.updateInterrupt();
    });
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    data[0] = this.locked(() => this.readRegister(offset));
  }

  write(offset: number, data: Uint8Array): void {
    if (data.length === 0) return;
    this.locked(() => this.writeRegister(offset, data[0]!));
  }

  /** What the guest transmitted since the last call (empty when nothing). One thread takes the output. */
  takeOutput(): Uint8Array {
    const w = this.words;
    // Cleared before the tail is read: a byte transmitted after that read rings the doorbell again.
    Atomics.store(w, OUT_DOORBELL, 0);
    const head = Atomics.load(w, OUT_HEAD) >>> 0;
    const tail = Atomics.load(w, OUT_TAIL) >>> 0;
    const n = (tail - head) >>> 0;
    const bytes = new Uint8Array(n);
    const at = head % SERIAL_OUTPUT_RING;
    const first = Math.min(n, SERIAL_OUTPUT_RING - at);
    bytes.set(this.output.subarray(at, at + first));
    bytes.set(this.output.subarray(0, n - first), first);
    Atomics.store(w, OUT_HEAD, tail | 0);
    if (n > 0) Atomics.notify(w, OUT_HEAD);
    return bytes;
  }

  /** Bytes dropped because nobody took the output in time. */
  get droppedOutput(): number {
    return Atomics.load(this.words, OUT_DROPPED) >>> 0;
  }

  /**
   * Hands what the guest transmits to `sink` on this thread's event loop until stopped: a byte sent
   * while the thread waits wakes it, later ones gather for OUTPUT_BATCH_MS before the next hand-over, so
   * a guest printing fast wakes the thread a few hundred times a second instead of once a character.
   * `deliver` hands over what waits now (before acting on what the console said, say).
   */
  watchOutput(sink: (bytes: Uint8Array) => void): { deliver(): void; stop(): void } {
    let watching = true;
    let gathering: NodeJS.Timeout | undefined;
    const deliver = (): void => {
      const bytes = this.takeOutput();
      if (bytes.length > 0) sink(bytes);
    };
    const arm = (): void => {
      gathering = undefined;
      if (!watching) return;
      const wait = Atomics.waitAsync(this.words, OUT_DOORBELL, 0);
      if (!wait.async) {
        deliver();
        gathering = setTimeout(arm, OUTPUT_BATCH_MS);
        return;
      }
      void wait.value.then(() => {
        if (!watching) return;
        deliver();
        gathering = setTimeout(arm, OUTPUT_BATCH_MS);
      });
    };
    arm();
    const stop = (): void => {
      if (!watching) return;
      watching = false;
      clearTimeout(gathering);
      // Settles the pending wait, which then finds the watch over.
      Atomics.store(this.words, OUT_DOORBELL, 1);
      Atomics.notify(this.words, OUT_DOORBELL);
      deliver();
    };
    return { deliver, stop };
  }

  private locked<T>(access: () => T): T {
    this.lock();
    try {
      return access();
    } finally {
      this.unlock();
    }
  }

  private lock(): void {
    while (Atomics.compareExchange(this.words, LOCK, UNLOCKED, LOCKED) !== UNLOCKED) Atomics.wait(this.words, LOCK, LOCKED);
  }

  private unlock(): void {
    Atomics.store(this.words, LOCK, UNLOCKED);
    Atomics.notify(this.words, LOCK, 1);
  }

  private pendingInput(): number {
    return (this.words[IN_TAIL]! - this.words[IN_HEAD]!) >>> 0;
  }

  private readRegister(offset: number): number {
    const w = this.words;
    const dlab = (w[W_LCR]! & LCR_DLAB) !== 0;
    switch (offset) {
      case RBR_THR_DLL:
        return dlab ? w[W_DIVISOR]! & 0xff : this.receive();
      case IER_DLM:
        return dlab ? w[W_DIVISOR]! >> 8 : w[W_IER]!;
      case IIR_FCR: {
        const iir = this.interruptIdentification();
        // Reading IIR while it reports THRE acknowledges that interrupt (16550A data sheet).
        if (iir === IIR_THRI) {
          w[W_THRE_PENDING] = 0;
          this.updateInterrupt();
        }
        return iir | (w[W_FIFO] ? IIR_FIFO_ENABLED : 0);
      }
      case LCR:
        return w[W_LCR]!;
      case MCR:
        return w[W_MCR]!;
      case LSR: {
        const lsr = LSR_THRE | LSR_TEMT | (this.pendingInput() > 0 ? LSR_DR : 0) | (w[W_OVERRUN] ? LSR_OE : 0);
        w[W_OVERRUN] = 0;
        this.updateInterrupt();
        return lsr;
      }
      case MSR:
        return this.modemStatus();
      case SCR:
        return w[W_SCR]!;
      default:
        return 0xff;
    }
  }

  private writeRegister(offset: number, value: number): void {
    const w = this.words;
    const dlab = (w[W_LCR]! & LCR_DLAB) !== 0;
    switch (offset) {
      case RBR_THR_DLL:
        if (dlab) w[W_DIVISOR] = (w[W_DIVISOR]! & 0xff00) | value;
        else this.transmit(value);
        return;
      case IER_DLM:
        if (dlab) {
          w[W_DIVISOR] = (w[W_DIVISOR]! & 0x00ff) | (value << 8);
        } else {
          const enablingThre = (value & IER_THRI) !== 0 && (w[W_IER]! & IER_THRI) === 0;
          w[W_IER] = value & IER_MASK;
          // The transmitter is empty, so enabling its interrupt raises it at once; the 8250 driver tests this.
          if (enablingThre) w[W_THRE_PENDING] = 1;
          this.updateInterrupt();
        }
        return;
      case IIR_FCR:
        w[W_FIFO] = value & FCR_ENABLE_FIFO;
        if (value & FCR_CLEAR_RCVR) w[IN_HEAD] = w[IN_TAIL]!;
        this.updateInterrupt();
        return;
      case LCR:
        w[W_LCR] = value;
        return;
      case MCR:
        w[W_MCR] = value & MCR_MASK;
        return;
      case SCR:
        w[W_SCR] = value;
        return;
      default:
      // LSR and MSR are read-only; writes to them are ignored as on hardware.
    }
  }

  private transmit(byte: number): void {
    if (this.words[W_MCR]! & MCR_LOOP) this.receiveBytes(Uint8Array.of(byte));
    else this.send(byte);
    this.words[W_THRE_PENDING] = 1;
    this.updateInterrupt();
  }

  /** Puts a byte in the transmit ring, waiting (unlocked) for room while the device thread catches up. */
  private send(byte: number): void {
    const w = this.words;
    const deadline = Date.now() + OUTPUT_ROOM_WAIT_MS;
    for (;;) {
      const head = Atomics.load(w, OUT_HEAD);
      const tail = Atomics.load(w, OUT_TAIL);
      if ((tail - head) >>> 0 < SERIAL_OUTPUT_RING) {
        this.output[(tail >>> 0) % SERIAL_OUTPUT_RING] = byte;
        Atomics.store(w, OUT_TAIL, (tail + 1) | 0);
        if (Atomics.compareExchange(w, OUT_DOORBELL, 0, 1) === 0) Atomics.notify(w, OUT_DOORBELL);
        return;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        Atomics.add(w, OUT_DROPPED, 1);
        return;
      }
      this.unlock();
      Atomics.wait(w, OUT_HEAD, head, left);
      this.lock();
    }
  }

  /** Adds bytes to the receive FIFO, up to its limit; the rest is lost and flagged as an overrun. */
  private receiveBytes(bytes: Uint8Array): void {
    const w = this.words;
    for (const b of bytes) {
      if (this.pendingInput() >= SERIAL_INPUT_LIMIT) {
        w[W_OVERRUN] = 1;
        break;
      }
      this.input[(w[IN_TAIL]! >>> 0) % SERIAL_INPUT_LIMIT] = b;
      w[IN_TAIL] = (w[IN_TAIL]! + 1) | 0;
    }
  }

  private receive(): number {
    const w = this.words;
    if (this.pendingInput() === 0) return 0;
    const byte = this.input[(w[IN_HEAD]! >>> 0) % SERIAL_INPUT_LIMIT]!;
    w[IN_HEAD] = (w[IN_HEAD]! + 1) | 0;
    this.updateInterrupt();
    return byte;
  }

  private modemStatus(): number {
    const mcr = this.words[W_MCR]!;
    if (!(mcr & MCR_LOOP)) return MSR_CONNECTED;
    // Loopback wires the modem control outputs back to the status inputs.
    let msr = 0;
    if (mcr & MCR_RTS) msr |= MSR_CTS;
    if (mcr & MCR_DTR) msr |= MSR_DSR;
    if (mcr & MCR_OUT1) msr |= MSR_RI;
    if (mcr & MCR_OUT2) msr |= MSR_DCD;
    return msr;
  }

  /** The highest-priority pending interrupt (receiver line status > received data > THR empty). */
  private interruptIdentification(): number {
    const w = this.words;
    if (w[W_IER]! & IER_RLSI && w[W_OVERRUN]) return IIR_RLSI;
    if (w[W_IER]! & IER_RDI && this.pendingInput() > 0) return IIR_RDI;
    if (w[W_IER]! & IER_THRI && w[W_THRE_PENDING]) return IIR_THRI;
    return IIR_NO_INT;
  }

  /** The UART's INTR output is a level; the interrupt controller pin is edge-triggered, so raise an edge on each rise. */
  private updateInterrupt(): void {
    const level = this.interruptIdentification() !== IIR_NO_INT;
    if (level && !this.words[W_LINE]) this.irq.trigger();
    this.words[W_LINE] = level ? 1 : 0;
  }
}

/** The UART as a vCPU thread answers it: the device thread's state, and its interrupt raised through the irqfd. */
export function localSerial({ options }: { options: unknown }): BusDevice {
  const { state, interruptFd } = options as LocalSerialOptions;
  const irq = new EventFd(interruptFd);
  return new Serial16550({ trigger: () => irq.signal() }, state);
}

/** The module vCPU threads load `localSerial` from. */
export const SERIAL_MODULE = new URL('./serial.js', import.meta.url).href;
