// How a vCPU thread hands an access to the device (main) thread over shared memory. The device
// thread never blocks: it awaits a doorbell with Atomics.waitAsync between its other events.
//
// Reads (and string I/O) are synchronous calls: the vCPU thread needs the answer before the guest can
// go on, so it blocks in Atomics.wait. Single writes are posted, as PCI posts memory writes: they go
// into a ring and the vCPU re-enters the guest at once, which saves the answer's cross-thread wake-up.
// The device thread drains the ring before it serves a call, so a read always sees the effect of
// every earlier write. A device error on a posted write is reported at the vCPU's next access or stop.
import { errorMessage } from '../sys/error-message.js';

/** Largest synchronous payload: one page of string I/O, as kvm_run carries it. */
export const MAILBOX_DATA_BYTES = 4096;

export const enum MailboxOp { PioRead = 0, PioWrite = 1, MmioRead = 2, MmioWrite = 3 }

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
const CONTROL_WORDS = 16;

// Ring of posted writes: [op, address low, address high, size] + 8 data bytes per slot.
const RING_SLOTS = 256;
const SLOT_WORDS = 6;
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

export class Mailbox {
  readonly control: Int32Array;
  readonly ring: Int32Array;
  readonly ringBytes: Uint8Array;
  readonly data: Uint8Array;
  readonly postedError: Uint8Array;

  constructor(readonly buffer = new SharedArrayBuffer(BYTES.control + BYTES.ring + MAILBOX_DATA_BYTES + ERROR_BYTES)) {
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
    ringBytes.set(data.subarray(0, size), (slot + 4) * 4);
    Atomics.store(control, RING_TAIL, next(tail));
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
    const sequence = this.sequence = next(this.sequence);
    const previous = Atomics.load(control, ANSWER);
    Atomics.store(control, REQUEST, sequence);
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

/**
 * The device side: drains posted writes and answers calls until the client closes. `handle` may
 * throw: for a call the message goes back as a MailboxError; for a posted write it is kept for the
 * vCPU's next access, and `onPostedFailure` runs (to stop the vCPU).
 */
export async function serveMailbox(mailbox: Mailbox, handle: (request: MailboxRequest) => void, onPostedFailure: () => void): Promise<void> {
  const { control, ring: slots, ringBytes, data } = mailbox;
  let answered = Atomics.load(control, ANSWER);
  for (;;) {
    const bell = Atomics.load(control, DOORBELL);
    // REQUEST before the ring's tail: a vCPU posts its writes before it stores a call's REQUEST, so
    // the tail read after REQUEST covers every write that must take effect before the call is answered.
    const request = Atomics.load(control, REQUEST);
    drainPosted();
    if (request === CLOSED) return;
    if (request !== answered) {
      answerCall();
      answered = request;
      Atomics.store(control, ANSWER, request);
      Atomics.notify(control, ANSWER);
      continue;
    }
    const wait = waitAsync(control, DOORBELL, bell);
    if (wait.async) await wait.value;
  }

  function drainPosted(): void {
    let head = control[RING_HEAD]!;
    const tail = Atomics.load(control, RING_TAIL);
    if (head === tail) return;
    for (; head !== tail; head = next(head)) {
      if (control[POSTED_FAILED]) continue; // a failed device sees no further writes from this vCPU
      const slot = (head % RING_SLOTS) * SLOT_WORDS;
      const size = slots[slot + 3]!;
      try {
        if (size <= 0 || size > POSTED_MAX_BYTES) throw new MailboxError(`posted write of ${size} bytes`);
        handle({
          op: slots[slot] as MailboxOp,
          address: (slots[slot + 1]! >>> 0) + (slots[slot + 2]! >>> 0) * 0x1_0000_0000,
          size,
          count: 1,
          data: ringBytes.subarray((slot + 4) * 4, (slot + 4) * 4 + size),
        });
      } catch (e) {
        control[POSTED_ERROR_LENGTH] = errorInto(e, mailbox.postedError);
        Atomics.store(control, POSTED_FAILED, 1);
        onPostedFailure();
      }
    }
    Atomics.store(control, RING_HEAD, head);
    Atomics.notify(control, RING_HEAD);
  }

  function answerCall(): void {
    const size = control[SIZE]!;
    const count = control[COUNT]!;
    control[FAILED] = 0;
    try {
      if (size <= 0 || count <= 0 || size * count > MAILBOX_DATA_BYTES) throw new MailboxError(`access of ${count}x${size} bytes does not fit the mailbox`);
      const op = control[OP] as MailboxOp;
      // A device that answers fewer bytes than asked must not hand the guest an earlier call's data.
      if (!isWriteOp(op)) data.fill(0, 0, size * count);
      handle({
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
