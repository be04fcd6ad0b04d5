// A Linux eventfd: a 64-bit counter the kernel (ioeventfd) or the VMM (irqfd) signals.
import { EFD_CLOEXEC, EFD_NONBLOCK, close, eventfd, read, write } from './sys.js';

export class EventFd {
  private readonly one = new BigUint64Array([1n]);
  private readonly counter = new BigUint64Array(1);
  private closed = false;

  constructor(readonly fd: number = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

  /** Adds 1 to the counter: a pending notification for whoever waits on it. */
  signal(): void {
    write(this.fd, new Uint8Array(this.one.buffer), 'eventfd write');
  }

  /** Reads and clears the counter; 0 when nothing was signalled since the last take. */
  take(): bigint {
    try {
      read(this.fd, new Uint8Array(this.counter.buffer), 'eventfd read');
      return this.counter[0]!;
    } catch (e) {
      if ((e as { code?: string }).code === 'EAGAIN') return 0n;
      throw e;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
  }
}
