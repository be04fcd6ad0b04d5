// How a vCPU thread hands an access to the device (main) thread over shared memory. The device
// thread never blocks: it awaits a doorbell with Atomics.waitAsync between its other events.
//
// Reads (and string I/O) are synchronous calls: the vCPU thread needs the answer before the guest can
// go on, so it blocks in Atomics.wait. Single writes are posted, as PCI posts memory writes: they go
// into a ring and the vCPU re-enters the guest at once, which saves the answer's cross-thread wake-up.
//
// Every access, posted or called, takes a number from one counter shared by all vCPUs of a machine
// before it is published, and the device thread applies them in that order. Per vCPU that keeps a read
// behind every earlier write; across vCPUs it keeps the guest's own order: when one vCPU releases a
// lock after its writes and another takes it and writes, the second vCPU's numbers are later, so a
// device (the UART's transmit register, written by whichever vCPU holds the port lock) sees the writes
// as the guest made them. A device error on a posted write is reported at the vCPU's next access or stop.
import { errorMessage } from '../sys/error-message.js';

/** Largest synchronous payload: one page of string I/O, as kvm_run carries it. */
export const MAILBOX_DATA_BYTES = 4096;

export enum MailboxOp {
  PioRead = 0,
  PioWrite = 1,
  MmioRead = 2,
  MmioWrite = 3,
}

// Control words.
const DOORBELL = 0; // incremented by the vCPU side after each posted write or call
const REQUEST = 1; // number of the pending call (CLOSED: no more)
const ANSWER = 2; // number of the last answered call
const OP = 3;
const ADDRESS_LOW = 4;
const ADDRESS_HIGH = 5;
const SIZE = 6;
const COUNT = 7;
const FAILED = 8;
const ERROR_LENGTH = 9;
const RING_HEAD = 10; // next posted write the device side will take
const RING_TAIL = 11; // next free ring slot
const POSTED_FAILED = 12;
const POSTED_ERROR_LENGTH = 13;
const PUBLISHING = 14; // non-zero while the vCPU side holds an order number it has not yet published
const CALL_ORDER = 15; // the pending call's order number
const CONTROL_WORDS = 16;

// Ring of posted writes: [op, address low, address high, size, order] + 8 data bytes per slot.
const RING_SLOTS = 256;
const SLOT_WORDS = 7;
const SLOT_DATA = 5;
const POSTED_MAX_BYTES = 8;
const ERROR_BYTES = 1024;

/** Request number that tells the serving side to return: the vCPU thread is gone. */
const CLOSED = -1;

const BYTES = {
  control: CONTROL_WORDS * 4,
  ring: RING_SLOTS * SLOT_WORDS * 4,
};

export interface MailboxRequest {
  op: MailboxOp;
  address: number;
  size: number;
  count: number;
  /** size*count bytes: written data, or where read data goes. */
  data: Uint8Array;
}

/** The order counter a machine's mailboxes share: the next number an access takes. */
export function createAccessOrder(): SharedArrayBuffer {
  return new SharedArrayBuffer(4);
}

export class Mailbox {
  readonly order: Int32Array;
  readonly control: Int32Array;
  readonly ring: Int32Array;
  readonly ringBytes: Uint8Array;
  readonly data: Uint8Array;
  readonly postedError: Uint8Array;

  constructor(
    readonly buffer = new SharedArrayBuffer(BYTES.control + BYTES.ring + MAILBOX_DATA_BYTES + ERROR_BYTES),
    readonly orderBuffer = createAccessOrder(),
  ) {
    this.order = new Int32Array(orderBuffer);
    this.control = new Int32Array(buffer, 0, CONTROL_WORDS);
    this.ring = new Int32Array(buffer, BYTES.control, RING_SLOTS * SLOT_WORDS);
    this.ringBytes = new Uint8Array(buffer, BYTES.control, BYTES.ring);
    this.data = new Uint8Array(buffer, BYTES.control + BYTES.ring, MAILBOX_DATA_BYTES);
    this.postedError = new Uint8Array(buffer, BYTES.control + BYTES.ring + MAILBOX_DATA_BYTES, ERROR_BYTES);
  }

  /** Ends the serving loop once it has drained what was posted: the vCPU side will send nothing more. */
  close(): void {
    Atomics.store(this.control, REQUEST, CLOSED);
    ring(this.control);
  }
}

function ring(control: Int32Array): void {
  Atomics.add(control, DOORBELL, 1);
  Atomics.notify(control, DOORBELL);
}

type WaitAsync = (array: Int32Array, index: number, value: number) => { async: false; value: string } | { async: true; value: Promise<string> };
/** Atomics.waitAsync (Node 16+; not yet in the ES2023 type library). */
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();
const isWriteOp = (op: MailboxOp) => op === MailboxOp.PioWrite || op === MailboxOp.MmioWrite;
const next = (index: number) => (index + 1) & 0x7fff_ffff;

export class MailboxError extends Error {}

/** The vCPU side. */
export class MailboxClient {
  private sequence = 0;

  constructor(private readonly mailbox: Mailbox) {}

  /** Hands an access to the device thread: single writes are posted, everything else waits for the answer. */
  access(op: MailboxOp, address: number, size: number, count: number, data: Uint8Array): void {
    this.throwIfPostedFailed();
    if (isWriteOp(op) && count === 1 && size <= POSTED_MAX_BYTES) this.post(op, address, size, data);
    else this.call(op, address, size, count, data);
  }

  /** Throws the error a device raised on an earlier posted write, if any. */
  throwIfPostedFailed(): void {
    const { control, postedError } = this.mailbox;
    if (Atomics.load(control, POSTED_FAILED) !== 0) {
      throw new MailboxError(textDecoder.decode(postedError.slice(0, control[POSTED_ERROR_LENGTH])));
    }
  }

  /** Waits until the device thread has handled every posted write. */
  flush(): void {
    const { control } = this.mailbox;
    const tail = control[RING_TAIL]!;
    for (let head = Atomics.load(control, RING_HEAD); head !== tail; head = Atomics.load(control, RING_HEAD)) {
      Atomics.wait(control, RING_HEAD, head);
    }
  }

  private post(op: MailboxOp, address: number, size: number, data: Uint8Array): void {
    const { control, ring: slots, ringBytes } = this.mailbox;
    const tail = control[RING_TAIL]!;
    for (let head = Atomics.load(control, RING_HEAD); ((tail - head) & 0x7fff_ffff) >= RING_SLOTS; head = Atomics.load(control, RING_HEAD)) {
      Atomics.wait(control, RING_HEAD, head);
    }
    const slot = (tail % RING_SLOTS) * SLOT_WORDS;
    slots[slot] = op;
    slots[slot + 1] = address % 0x1_0000_0000;
    slots[slot + 2] = Math.floor(address / 0x1_0000_0000);
    slots[slot + 3] = size;
    ringBytes.set(data.subarray(0, size), (slot + SLOT_DATA) * 4);
    Atomics.store(control, PUBLISHING, 1);
    slots[slot + 4] = Atomics.add(this.mailbox.order, 0, 1);
    Atomics.store(control, RING_TAIL, next(tail));
    Atomics.store(control, PUBLISHING, 0);
    ring(control);
  }

  private call(op: MailboxOp, address: number, size: number, count: number, data: Uint8Array): void {
    const { control, data: shared } = this.mailbox;
    const isWrite = isWriteOp(op);
    if (isWrite) shared.set(data);
    control[OP] = op;
    control[ADDRESS_LOW] = address % 0x1_0000_0000;
    control[ADDRESS_HIGH] = Math.floor(address / 0x1_0000_0000);
    control[SIZE] = size;
    control[COUNT] = count;
    this.sequence = next(this.sequence);
    const sequence = this.sequence;
    const previous = Atomics.load(control, ANSWER);
    Atomics.store(control, PUBLISHING, 1);
    control[CALL_ORDER] = Atomics.add(this.mailbox.order, 0, 1);
    Atomics.store(control, REQUEST, sequence);
    Atomics.store(control, PUBLISHING, 0);
    ring(control);
    for (let answer = previous; answer !== sequence; answer = Atomics.load(control, ANSWER)) {
      Atomics.wait(control, ANSWER, answer);
    }
    if (control[FAILED]) throw new MailboxError(textDecoder.decode(shared.slice(0, control[ERROR_LENGTH])));
    if (!isWrite) data.set(shared.subarray(0, data.length));
  }

  close(): void {
    this.mailbox.close();
  }
}

function errorInto(e: unknown, area: Uint8Array): number {
  const message = textEncoder.encode(errorMessage(e)).subarray(0, area.length);
  area.set(message);
  return message.length;
}

type Handler = (request: MailboxRequest) => void;

/** One vCPU's mailbox as the device side serves it. */
class Served {
  private answered: number;

  constructor(
    readonly mailbox: Mailbox,
    private readonly handle: Handler,
    private readonly onPostedFailure: () => void,
  ) {
    this.answered = Atomics.load(mailbox.control, ANSWER);
  }

  /** The order number of the earliest published access not yet served, if any. */
  nextOrder(): number | undefined {
    const { control, ring: slots } = this.mailbox;
    const head = control[RING_HEAD]!;
    // A vCPU's posted writes are numbered before its next call, so the ring holds its earliest access.
    if (head !== Atomics.load(control, RING_TAIL)) return slots[(head % RING_SLOTS) * SLOT_WORDS + 4];
    const request = Atomics.load(control, REQUEST);
    return request !== CLOSED && request !== this.answered ? control[CALL_ORDER] : undefined;
  }

  get closed(): boolean {
    return Atomics.load(this.mailbox.control, REQUEST) === CLOSED && this.nextOrder() === undefined;
  }

  get publishing(): boolean {
    return Atomics.load(this.mailbox.control, PUBLISHING) !== 0;
  }

  /** Serves the access nextOrder() named. */
  serveNext(): void {
    const { control } = this.mailbox;
    const head = control[RING_HEAD]!;
    if (head !== Atomics.load(control, RING_TAIL)) {
      this.applyPosted(head);
      Atomics.store(control, RING_HEAD, next(head));
      Atomics.notify(control, RING_HEAD);
      return;
    }
    const request = Atomics.load(control, REQUEST);
    this.answerCall();
    this.answered = request;
    Atomics.store(control, ANSWER, request);
    Atomics.notify(control, ANSWER);
  }

  private applyPosted(head: number): void {
    const { control, ring: slots, ringBytes } = this.mailbox;
    if (control[POSTED_FAILED]) return; // a failed device sees no further writes from this vCPU
    const slot = (head % RING_SLOTS) * SLOT_WORDS;
    const size = slots[slot + 3]!;
    try {
      if (size <= 0 || size > POSTED_MAX_BYTES) throw new MailboxError(`posted write of ${size} bytes`);
      this.handle({
        op: slots[slot] as MailboxOp,
        address: (slots[slot + 1]! >>> 0) + (slots[slot + 2]! >>> 0) * 0x1_0000_0000,
        size,
        count: 1,
        data: ringBytes.subarray((slot + SLOT_DATA) * 4, (slot + SLOT_DATA) * 4 + size),
      });
    } catch (e) {
      control[POSTED_ERROR_LENGTH] = errorInto(e, this.mailbox.postedError);
      Atomics.store(control, POSTED_FAILED, 1);
      this.onPostedFailure();
    }
  }

  private answerCall(): void {
    const { control, data } = this.mailbox;
    const size = control[SIZE]!;
    const count = control[COUNT]!;
    control[FAILED] = 0;
    try {
      if (size <= 0 || count <= 0 || size * count > MAILBOX_DATA_BYTES) throw new MailboxError(`access of ${count}x${size} bytes does not fit the mailbox`);
      const op = control[OP] as MailboxOp;
      // A device that answers fewer bytes than asked must not hand the guest an earlier call's data.
      if (!isWriteOp(op)) data.fill(0, 0, size * count);
      this.handle({
        op,
        address: (control[ADDRESS_LOW]! >>> 0) + (control[ADDRESS_HIGH]! >>> 0) * 0x1_0000_0000,
        size,
        count,
        data: data.subarray(0, size * count),
      });
    } catch (e) {
      control[ERROR_LENGTH] = errorInto(e, data);
      control[FAILED] = 1;
    }
  }
}

/**
 * The device side of the mailboxes that share one order counter (a machine's vCPUs): serves every
 * published access in order number, whichever mailbox holds it.
 */
export class MailboxServer {
  private readonly served = new Set<Served>();
  private nextOrder: number;

  constructor(private readonly order: Int32Array) {
    this.nextOrder = Atomics.load(order, 0);
  }

  /**
   * Serves one vCPU's mailbox until its client closes. `handle` may throw: for a call the message goes
   * back as a MailboxError; for a posted write it is kept for the vCPU's next access, and
   * `onPostedFailure` runs (to stop the vCPU).
   */
  async serve(mailbox: Mailbox, handle: Handler, onPostedFailure: () => void): Promise<void> {
    if (mailbox.order.buffer !== this.order.buffer) throw new Error('a mailbox joins the server of its own order counter');
    const served = new Served(mailbox, handle, onPostedFailure);
    this.served.add(served);
    const { control } = mailbox;
    try {
      for (;;) {
        const bell = Atomics.load(control, DOORBELL);
        const waiting = this.serveInOrder();
        if (served.closed) return;
        if (waiting) {
          // Another vCPU holds the next number and is about to publish it: look again shortly.
          await new Promise((resolve) => setImmediate(resolve));
          continue;
        }
        const wait = waitAsync(control, DOORBELL, bell);
        if (wait.async) await wait.value;
      }
    } finally {
      this.served.delete(served);
    }
  }

  /** Serves what is published in order; true when an access numbered next is still being published. */
  private serveInOrder(): boolean {
    for (;;) {
      let progressed = false;
      for (const s of this.served) {
        while (s.nextOrder() === this.nextOrder) {
          s.serveNext();
          this.nextOrder = (this.nextOrder + 1) | 0;
          progressed = true;
        }
      }
      if (progressed) continue;
      if (Atomics.load(this.order, 0) === this.nextOrder) return false;
      if ([...this.served].some((s) => s.publishing)) return true;
      // Nobody is publishing, and a look after that finds nothing numbered next: its vCPU thread ended
      // between taking the number and publishing it, and nothing will ever carry that number.
      if ([...this.served].some((s) => s.nextOrder() === this.nextOrder)) continue;
      this.nextOrder = (this.nextOrder + 1) | 0;
    }
  }
}

/** Serves a mailbox that shares its order counter with no other. */
export function serveMailbox(mailbox: Mailbox, handle: Handler, onPostedFailure: () => void): Promise<void> {
  return new MailboxServer(mailbox.order).serve(mailbox, handle, onPostedFailure);
}
