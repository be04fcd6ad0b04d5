// Delivers eventfd signals to the main thread without blocking its event loop. Node cannot poll an arbitrary fd,
// so one epoll_wait at a time runs on a thread of libuv's pool (koffi's asynchronous call) and hands the ready fds
// back to the event loop; the main thread then reads (and so clears) each counter itself. A wait is pending only
// while some fd is watched: a pending call keeps Node's event loop alive, and a process with nothing watched must
// be free to end. The fds are edge-triggered and the wait never reads them, so it cannot read an fd that the main
// thread has meanwhile closed and reused. No worker thread: a JavaScript context of its own costs a VM 8.5 MiB.
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EPOLLET,
  EPOLLIN,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  close,
  epollCreate,
  epollCtl,
  epollEvent,
  epollWaitAsync,
  eventfd,
  write,
} from './sys.js';

type Ready = (fd: number) => void;

const MAX_EVENTS = 64;
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

export class EventFdPoller {
  private readonly epfd = epollCreate();
  /** Written to end the pending wait (nothing left to watch, or closing); never read, so every write is an edge. */
  private readonly wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  private readonly events = new Uint8Array(MAX_EVENTS * epollEvent.size);
  private readonly watched = new Map<number, Ready>();
  private waiting = false;
  private closed = false;
  private waitEnded: (() => void) | undefined;

  constructor() {
    epollCtl(this.epfd, EPOLL_CTL_ADD, this.wake, EPOLLIN | EPOLLET);
  }

  watch(fd: number, ready: Ready): void {
    if (this.closed) throw new Error('the eventfd poller is closed');
    if (this.watched.has(fd)) throw new Error(`eventfd ${fd} is already watched`);
    epollCtl(this.epfd, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLET);
    this.watched.set(fd, ready);
    this.wait();
  }

  unwatch(fd: number): void {
    if (!this.watched.delete(fd)) return;
    epollCtl(this.epfd, EPOLL_CTL_DEL, fd);
    if (this.watched.size === 0) this.endWait();
  }

  /** Whether an epoll_wait is pending (and so holds the event loop). */
  get pending(): boolean {
    return this.waiting;
  }

  /** Ends the pending wait and releases the epoll instance; watched fds are forgotten. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watched.clear();
    if (this.waiting)
      await new Promise<void>((resolve) => {
        this.waitEnded = resolve;
        this.endWait();
      });
    close(this.wake);
    close(this.epfd);
  }

  private wait(): void {
    if (this.waiting || this.closed || this.watched.size === 0) return;
    this.waiting = true;
    epollWaitAsync(this.epfd, this.events, (fds) => {
      this.waiting = false;
      this.waitEnded?.();
      for (const fd of fds) this.watched.get(fd)?.(fd);
      this.wait();
    });
  }

  private endWait(): void {
    if (this.waiting) write(this.wake, ONE, 'eventfd write');
  }
}

let shared: EventFdPoller | undefined;

/** The process-wide poller, made on first use. */
export function eventFdPoller(): EventFdPoller {
  shared ??= new EventFdPoller();
  return shared;
}
