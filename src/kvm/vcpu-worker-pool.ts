// vCPU worker threads started ahead of their vCPUs. A worker spends most of its start-up creating a
// JavaScript context and loading the KVM modules and koffi; started first thing, it does that while
// the main thread loads its own modules, reads the kernel and builds the VM, instead of afterwards.
// This module imports nothing of the VMM, so a command can start workers before loading the rest.
import { Worker } from 'node:worker_threads';

/** What a vCPU worker is started with; its vCPU comes later in a `run` command. */
export const VCPU_WORKER_ROLE = 'ts-vmm vCPU';

/** The one message a started worker receives: the vCPU to run, or leave unused. */
export type VcpuWorkerCommand<Run = unknown> = { type: 'run'; data: Run } | { type: 'close' };

export function spawnVcpuWorker(): Worker {
  return new Worker(new URL('./vcpu-worker.js', import.meta.url), { workerData: { role: VCPU_WORKER_ROLE } });
}

export class VcpuWorkerPool {
  private readonly idle: Worker[] = [];
  private readonly ended = new WeakSet<Worker>();

  /** Starts `count` workers now; until taken they do not keep the process alive. */
  static prestart(count: number): VcpuWorkerPool {
    const pool = new VcpuWorkerPool();
    for (let i = 0; i < count; i++) {
      const worker = spawnVcpuWorker();
      worker.unref();
      // A worker that fails while idle (a module that cannot load) is not handed out; a fresh one
      // started in its place fails the same way where the failure is reported.
      worker.on('error', () => undefined);
      worker.once('exit', () => pool.ended.add(worker));
      pool.idle.push(worker);
    }
    return pool;
  }

  /** A started worker, or a new one when none is left. */
  take(): Worker {
    for (let worker = this.idle.shift(); worker !== undefined; worker = this.idle.shift()) {
      if (this.ended.has(worker)) continue;
      worker.ref();
      return worker;
    }
    return spawnVcpuWorker();
  }

  /**
   * Ends the workers nobody took. Each is asked to leave once it has loaded rather than terminated:
   * a worker stopped while koffi is still loading aborts the whole process (napi_throw on a dying
   * context), so teardown waits for the end of the start-up, however early it comes.
   */
  async close(): Promise<void> {
    const unused = this.idle.splice(0).filter((worker) => !this.ended.has(worker));
    await Promise.all(
      unused.map(async (worker) => {
        const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
        // Referenced until it exits: an idle worker must not be cut off by the process ending first.
        worker.ref();
        worker.postMessage({ type: 'close' } satisfies VcpuWorkerCommand);
        await exited;
      }),
    );
  }
}
