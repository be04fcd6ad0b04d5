// A Linux eventfd: a 64-bit counter the kernel (ioeventfd) or the VMM (irqfd) signals. listen()
// delivers its signals to the main thread through the shared epoll poller.
import { eventFdPoller } from './eventfd-poller.js';
import { constants } from 'node:os';
import { EFD_CLOEXEC, EFD_NONBLOCK, SysError, close, eventfd, read, write } from './sys.js';

const { EAGAIN } = constants.errno;

export class EventFd {
  private readonly one = new Uint8Array(new BigUint64Array([1n]).buffer);
  private readonly counter = new BigUint64Array(1);
  private readonly counterBytes = new Uint8Array(this.counter.buffer);
  private listening = false;
  private closed = false;

  constructor(readonly fd: number = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

  /** Adds 1 to the counter: a pending notification for whoever waits on it. */
  signal(): void {
    write(this.fd, this.one, 'eventfd write');
  }

  /** Reads and clears the counter; 0 when nothing was signalled since the last take. */
  take(): bigint {
    try {
      read(this.fd, this.counterBytes, 'eventfd read');
      return this.counter[0]!;
    } catch (e) {
      if (e instanceof SysError && e.errno === EAGAIN) return 0n;
      throw e;
    }
  }

  /**
   * Calls `listener` on the main thread after the counter was signalled, with the signals taken since
   * the last call (several signals may coalesce into one call). One listener per eventfd.
   */
  listen(listener: (count: bigint) => void): void {
    if (this.listening) throw new Error(`eventfd ${this.fd} already has a listener`);
    this.listening = true;
    eventFdPoller().watch(this.fd, () => {
      const count = this.take();
      if (count > 0n) listener(count);
    });
  }

  unlisten(): void {
    if (!this.listening) return;
    this.listening = false;
    eventFdPoller().unwatch(this.fd);
  }

  close(): void {
    if (this.closed) return;
    this.unlisten();
    this.closed = true;
    close(this.fd);
  }
}
