// The eventfd poller's thread: epoll_wait for ever, posting the ready fds to the main thread.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { epollEvent, epollWait } from './sys.js';

export const EVENTFD_POLLER_ROLE = 'ts-vmm eventfd poller';

export interface PollerWorkerData {
  role: typeof EVENTFD_POLLER_ROLE;
  epfd: number;
  wake: number;
  stopFlag: SharedArrayBuffer;
}

const MAX_EVENTS = 64;

function poll({ epfd, wake, stopFlag }: PollerWorkerData): void {
  const stop = new Int32Array(stopFlag);
  const events = new Uint8Array(MAX_EVENTS * epollEvent.size);
  while (Atomics.load(stop, 0) === 0) {
    const ready = epollWait(epfd, events).filter((fd) => fd !== wake);
    if (ready.length > 0) parentPort!.postMessage(ready);
  }
}

if (!isMainThread && (workerData as { role?: unknown } | null)?.role === EVENTFD_POLLER_ROLE) {
  poll(workerData as PollerWorkerData);
}
