// aes-xts-plain64 encryption spread over worker threads: each chunk is handed over (its memory transferred, not
// copied), encrypted in place there and handed back, so the main thread is left with the reading and writing.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** What an XTS thread starts with: the XTS key pair (in the thread's own copy, cleared once used). */
export interface XtsThreadData {
  key: ArrayBuffer;
  sectorSize: number;
}

/** One chunk to encrypt: `length` bytes (whole sectors) at the start of `chunk`. */
export interface XtsThreadJob {
  chunk: ArrayBuffer;
  length: number;
  firstIv: bigint;
}

interface Thread {
  worker: Worker;
  exited: Promise<void>;
  /** Jobs sent and not yet answered, oldest first (a thread answers in order). */
  waiting: { resolve: (chunk: ArrayBuffer) => void; reject: (error: Error) => void }[];
}

/** Threads to use: one per CPU, at most 4 (beyond that the main thread's I/O is the limit). */
export function xtsThreadCount(): number {
  return Math.min(4, availableParallelism());
}

export class XtsThreads {
  private readonly threads: Thread[] = [];
  private next = 0;

  constructor(key: Buffer, sectorSize: number, count: number) {
    for (let i = 0; i < count; i++) {
      const copy = new ArrayBuffer(key.length);
      key.copy(new Uint8Array(copy));
      const worker = new Worker(new URL('./xts-worker.js', import.meta.url), {
        workerData: { key: copy, sectorSize } satisfies XtsThreadData,
        transferList: [copy],
      });
      const thread: Thread = { worker, exited: new Promise((resolve) => worker.once('exit', () => resolve())), waiting: [] };
      worker.on('message', (chunk: ArrayBuffer) => thread.waiting.shift()?.resolve(chunk));
      const fail = (error: Error) => {
        for (const job of thread.waiting.splice(0)) job.reject(error);
      };
      worker.on('error', fail);
      worker.on('exit', (code) => fail(new Error(`an XTS thread exited (status ${code}) with work outstanding`)));
      this.threads.push(thread);
    }
  }

  /** Encrypts the first `length` bytes of `chunk` in a thread; `chunk` is unusable until the promise gives it back. */
  encrypt(chunk: ArrayBuffer, length: number, firstIv: bigint): Promise<ArrayBuffer> {
    const thread = this.threads[this.next]!;
    this.next = (this.next + 1) % this.threads.length;
    return new Promise((resolve, reject) => {
      thread.waiting.push({ resolve, reject });
      thread.worker.postMessage({ chunk, length, firstIv } satisfies XtsThreadJob, [chunk]);
    });
  }

  /**
   * Lets the threads end. They are asked to leave rather than terminated: a thread stopped while koffi is still
   * loading (one that never got a chunk) aborts the whole process.
   */
  async close(): Promise<void> {
    await Promise.all(
      this.threads.map(async ({ worker, exited }) => {
        worker.postMessage(null);
        await exited;
      }),
    );
  }
}
