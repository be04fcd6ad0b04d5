// Runs each vCPU in its own worker thread and serves their I/O from the main (device) thread, whose
// event loop stays free: exits arrive as mailbox requests awaited with Atomics.waitAsync.
//
// Stopping is Firecracker's kick: set the stop flag and kvm_run.immediate_exit (so a vCPU about to
// enter the guest returns at once), then signal the thread with tgkill so one already inside KVM_RUN
// returns EINTR. SIGUSR2 needs a handler first, or its default action would end the process.
import { constants } from 'node:os';
import type { Worker } from 'node:worker_threads';
import type { GuestMemory } from '../memory/guest-memory.js';
import { busAccess } from './io-dispatch.js';
import type { ExitRecorderDescriptor } from './exit-recorder.js';
import type { LocalRange } from './local-devices.js';
import { createAccessOrder, Mailbox, MailboxOp, MailboxServer, type MailboxRequest } from './mailbox.js';
import { SysError, tgkill } from '../sys/sys.js';
import type { IoBuses, VcpuRunner, VcpuStop } from './types.js';
import type { Vcpu } from './vcpu.js';
import { spawnVcpuWorker, type VcpuWorkerCommand, type VcpuWorkerPool } from './vcpu-worker-pool.js';
import { CONTROL_WORDS, STOP_REQUESTED, THREAD_ID, type VcpuWorkerData, type VcpuWorkerMessage } from './vcpu-worker.js';

const SIGUSR2 = 12;
const KICK_SIGNAL = 'SIGUSR2';
const ignoreKick = (): void => undefined;

/** Installs the no-op SIGUSR2 handler once per process (idempotent). */
function installKickHandler(): void {
  if (!process.listeners(KICK_SIGNAL).includes(ignoreKick)) process.on(KICK_SIGNAL, ignoreKick);
}

export interface VcpuThreadsOptions {
  /** Ranges answered inside each vCPU thread instead of on the device thread. */
  localRanges?: LocalRange[];
  /** Guest memory, for local devices that need it. */
  memory?: GuestMemory;
  /** Workers started earlier (they then start faster); new ones are started otherwise. */
  workers?: VcpuWorkerPool;
  /** Where each vCPU records its exits (by vCPU id), when the VMM watches them. */
  recorders?: readonly ExitRecorderDescriptor[];
}

/** One vCPU's thread as the main thread sees it. */
class VcpuThread {
  private readonly control = new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4));
  private readonly mailbox: Mailbox;
  private readonly worker: Worker;
  private exited = false;
  readonly stopped: Promise<VcpuStop>;

  constructor(
    readonly vcpu: Vcpu,
    buses: IoBuses,
    options: VcpuThreadsOptions,
    server: MailboxServer,
    order: SharedArrayBuffer,
    onStop: (stop: VcpuStop) => void,
  ) {
    this.mailbox = new Mailbox(undefined, order);
    const data: VcpuWorkerData = {
      vcpu: vcpu.descriptor(),
      mailbox: this.mailbox.buffer,
      accessOrder: order,
      control: this.control.buffer as SharedArrayBuffer,
      localRanges: options.localRanges ?? [],
      memory: options.memory?.descriptor(),
      recorder: options.recorders?.[vcpu.id],
    };
    // A vCPU stopped by an earlier runner still has immediate_exit set; it may run again (resume).
    vcpu.setImmediateExit(false);
    this.worker = options.workers?.take() ?? spawnVcpuWorker();
    this.worker.postMessage({ type: 'run', data } satisfies VcpuWorkerCommand<VcpuWorkerData>);
    const served = server.serve(
      this.mailbox,
      (request) => serve(buses, request),
      () => this.stop(),
    );
    this.stopped = new Promise<VcpuStop>((resolve) => {
      let stop: VcpuStop | undefined;
      this.worker.on('message', (message: VcpuWorkerMessage) => {
        stop = message.stop;
      });
      this.worker.on('error', (e) => {
        stop ??= { vcpu: vcpu.id, reason: 'error', message: `vCPU ${vcpu.id}: thread failed: ${e.message}` };
      });
      this.worker.on('exit', (code) => {
        stop ??= { vcpu: vcpu.id, reason: 'error', message: `vCPU ${vcpu.id}: thread exited with code ${code} before reporting` };
        this.exited = true;
        // The worker closes the mailbox on a clean stop; after a crash, close it for it.
        this.mailbox.close();
        void served.then(() => {
          onStop(stop!);
          resolve(stop!);
        });
      });
    });
  }

  stop(): void {
    if (this.exited) return;
    Atomics.store(this.control, STOP_REQUESTED, 1);
    this.vcpu.setImmediateExit(true);
    const tid = Atomics.load(this.control, THREAD_ID);
    if (tid === 0) return;
    try {
      tgkill(process.pid, tid, SIGUSR2);
    } catch (e) {
      // ESRCH: the thread ended between reading its tid and the signal; nothing left to kick.
      if (!(e instanceof SysError && e.errno === constants.errno.ESRCH)) throw e;
    }
  }
}

function serve(buses: IoBuses, { op, address, size, count, data }: MailboxRequest): void {
  const isMmio = op === MailboxOp.MmioRead || op === MailboxOp.MmioWrite;
  const isWrite = op === MailboxOp.PioWrite || op === MailboxOp.MmioWrite;
  busAccess(isMmio ? buses.mmio : buses.pio, address, isWrite, size, count, data);
}

export type StopListener = (stop: VcpuStop) => void;

export class VcpuThreads implements VcpuRunner {
  private readonly threads: VcpuThread[] = [];
  private readonly listeners: StopListener[] = [];
  private started = false;
  /** Every vCPU's stop, once all threads have ended. */
  readonly stopped: Promise<VcpuStop[]>;
  private resolveStarted!: () => void;

  constructor(
    private readonly vcpus: readonly Vcpu[],
    private readonly buses: IoBuses,
    private readonly options: VcpuThreadsOptions = {},
  ) {
    const started = new Promise<void>((resolve) => {
      this.resolveStarted = resolve;
    });
    this.stopped = started.then(() => Promise.all(this.threads.map((t) => t.stopped)));
  }

  /** Called once per vCPU as it stops (halt, shutdown, error, or stop()). */
  onStop(listener: StopListener): void {
    this.listeners.push(listener);
  }

  start(): void {
    if (this.started) throw new Error('vCPU threads already started');
    this.started = true;
    installKickHandler();
    // One order for every vCPU's accesses: devices see them as the guest made them (see mailbox.ts).
    const order = createAccessOrder();
    const server = new MailboxServer(new Int32Array(order));
    for (const vcpu of this.vcpus) {
      this.threads.push(
        new VcpuThread(vcpu, this.buses, this.options, server, order, (stop) => {
          for (const listener of this.listeners) listener(stop);
        }),
      );
    }
    // Node joins worker threads at exit; one inside KVM_RUN would never return without a kick.
    process.once('exit', this.kickAll);
    void this.stopped.then(() => process.off('exit', this.kickAll));
    this.resolveStarted();
  }

  private readonly kickAll = (): void => {
    for (const t of this.threads) t.stop();
  };

  /** Stops every vCPU, whatever it is doing, and resolves when all threads have ended. */
  async stop(): Promise<VcpuStop[]> {
    if (!this.started) return [];
    this.kickAll();
    return this.stopped;
  }
}
