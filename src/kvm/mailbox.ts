// A synchronous call from a vCPU thread to the device thread over shared memory. The vCPU thread is
// stopped in an exit anyway, so it blocks (Atomics.wait); the device thread never blocks: it awaits
// requests with Atomics.waitAsync between its other events. Requests and answers are numbered, so
// neither side can mistake an old answer for a new one.

/** Largest payload: one page of string I/O, as kvm_run carries it. */
export const MAILBOX_DATA_BYTES = 4096;

export const enum MailboxOp { PioRead = 0, PioWrite = 1, MmioRead = 2, MmioWrite = 3 }

const REQUEST = 0;
const ANSWER = 1;
const OP = 2;
const ADDRESS_LOW = 3;
const ADDRESS_HIGH = 4;
const SIZE = 5;
const COUNT = 6;
const FAILED = 7;
const ERROR_LENGTH = 8;
const CONTROL_WORDS = 16;

/** Request number that tells the serving side to return: the vCPU thread is gone. */
const CLOSED = -1;

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
  readonly data: Uint8Array;

  constructor(readonly buffer = new SharedArrayBuffer(CONTROL_WORDS * 4 + MAILBOX_DATA_BYTES)) {
    this.control = new Int32Array(buffer, 0, CONTROL_WORDS);
    this.data = new Uint8Array(buffer, CONTROL_WORDS * 4, MAILBOX_DATA_BYTES);
  }

  /** Ends the serving loop: the vCPU side will send nothing more. */
  close(): void {
    Atomics.store(this.control, REQUEST, CLOSED);
    Atomics.notify(this.control, REQUEST);
  }
}

type WaitAsync = (array: Int32Array, index: number, value: number) => { async: false; value: string } | { async: true; value: Promise<string> };
/** Atomics.waitAsync (Node 16+; not yet in the ES2023 type library). */
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

export class MailboxError extends Error {}

/** The vCPU side: one blocking call at a time. */
export class MailboxClient {
  private sequence = 0;

  constructor(private readonly mailbox: Mailbox) {}

  /** Sends the access and waits for the device thread; read results land in `data`. */
  call(op: MailboxOp, address: number, size: number, count: number, data: Uint8Array): void {
    const { control, data: shared } = this.mailbox;
    const isWrite = op === MailboxOp.PioWrite || op === MailboxOp.MmioWrite;
    if (isWrite) shared.set(data);
    control[OP] = op;
    control[ADDRESS_LOW] = address % 0x1_0000_0000;
    control[ADDRESS_HIGH] = Math.floor(address / 0x1_0000_0000);
    control[SIZE] = size;
    control[COUNT] = count;
    const sequence = this.sequence = (this.sequence + 1) & 0x7fff_ffff;
    const previous = Atomics.load(control, ANSWER);
    Atomics.store(control, REQUEST, sequence);
    Atomics.notify(control, REQUEST);
    for (let answer = previous; answer !== sequence; answer = Atomics.load(control, ANSWER)) {
      Atomics.wait(control, ANSWER, answer);
    }
    if (control[FAILED]) {
      throw new MailboxError(textDecoder.decode(shared.slice(0, control[ERROR_LENGTH])));
    }
    if (!isWrite) data.set(shared.subarray(0, data.length));
  }

  close(): void {
    this.mailbox.close();
  }
}

/**
 * The device side: answers requests until the client closes. `handle` may throw; the message goes
 * back to the vCPU thread as a MailboxError.
 */
export async function serveMailbox(mailbox: Mailbox, handle: (request: MailboxRequest) => void): Promise<void> {
  const { control, data } = mailbox;
  let handled = Atomics.load(control, ANSWER);
  for (;;) {
    let request = Atomics.load(control, REQUEST);
    while (request === handled) {
      const wait = waitAsync(control, REQUEST, handled);
      if (wait.async) await wait.value;
      request = Atomics.load(control, REQUEST);
    }
    if (request === CLOSED) return;
    const size = control[SIZE]!;
    const count = control[COUNT]!;
    control[FAILED] = 0;
    try {
      if (size * count > MAILBOX_DATA_BYTES || size <= 0) throw new MailboxError(`access of ${count}x${size} bytes does not fit the mailbox`);
      handle({
        op: control[OP] as MailboxOp,
        address: (control[ADDRESS_LOW]! >>> 0) + (control[ADDRESS_HIGH]! >>> 0) * 0x1_0000_0000,
        size,
        count,
        data: data.subarray(0, size * count),
      });
    } catch (e) {
      const message = textEncoder.encode(e instanceof Error ? e.message : String(e)).subarray(0, MAILBOX_DATA_BYTES);
      data.set(message);
      control[ERROR_LENGTH] = message.length;
      control[FAILED] = 1;
    }
    handled = request;
    Atomics.store(control, ANSWER, request);
    Atomics.notify(control, ANSWER);
  }
}
