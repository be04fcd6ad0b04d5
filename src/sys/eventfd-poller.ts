// Delivers eventfd signals to the main thread without blocking its event loop. Node cannot poll an
// arbitrary fd, so one worker thread sits in epoll_wait and posts the numbers of ready fds; the main
// thread then reads (and so clears) each counter itself. The fds are edge-triggered: the worker never
// touches them, so it cannot read an fd that the main thread has meanwhile closed and reused.
import { Worker } from 'node:worker_threads';
import { EFD_CLOEXEC, EFD_NONBLOCK, EPOLLET, EPOLLIN, EPOLL_CTL_ADD, EPOLL_CTL_DEL, close, epollCreate, epollCtl, eventfd, write } from './sys.js';
import { EVENTFD_POLLER_ROLE, type PollerWorkerData } from './eventfd-poller-worker.js';

type Ready = (fd: number) => void;

export class EventFdPoller {
  private readonly epfd = epollCreate();
  /** Written to stop the worker; the shared flag says whether that is what it means. */
  private readonly wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  private readonly stopFlag = new Int32Array(new SharedArrayBuffer(4));
  private readonly watched = new Map<number, Ready>();
  private readonly worker: Worker;

  constructor() {
    epollCtl(this.epfd, EPOLL_CTL_ADD, this.wake, EPOLLIN | EPOLLET);
    const data: PollerWorkerData = { role: EVENTFD_POLLER_ROLE, epfd: this.epfd, wake: this.wake, stopFlag: this.stopFlag.buffer as SharedArrayBuffer };
    this.worker = new Worker(new URL('./eventfd-poller-worker.js', import.meta.url), { workerData: data });
    this.worker.on('message', (fds: number[]) => {
      for (const fd of fds) this.watched.get(fd)?.(fd);
    });
    // The poller serves whoever listens; it alone must not keep the process alive. At exit Node joins
    // every worker, which cannot happen while this one sits in epoll_wait: wake it first.
    this.worker.unref();
    process.once('exit', this.wakeToStop);
  }

  private readonly wakeToStop = (): void => {
    Atomics.store(this.stopFlag, 0, 1);
    write(this.wake, new Uint8Array(new BigUint64Array([1n]).buffer), 'eventfd write');
  };

  watch(fd: number, ready: Ready): void {
    if (this.watched.has(fd)) throw new Error(`eventfd ${fd} is already watched`);
    epollCtl(this.epfd, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLET);
    this.watched.set(fd, ready);
  }

  unwatch(fd: number): void {
    if (!this.watched.delete(fd)) return;
    epollCtl(this.epfd, EPOLL_CTL_DEL, fd);
  }

  /** Ends the worker and releases the epoll instance. */
  async close(): Promise<void> {
    process.off('exit', this.wakeToStop);
    this.wakeToStop();
    await new Promise((resolve) => this.worker.once('exit', resolve));
    close(this.wake);
    close(this.epfd);
  }
}

let shared: EventFdPoller | undefined;

/** The process-wide poller, started on first use. */
export function eventFdPoller(): EventFdPoller {
  shared ??= new EventFdPoller();
  return shared;
}
