// A virtio device whose queues are served on a thread of its own, as QEMU's iothreads or a vhost-user
// backend serve theirs: the worker waits on the queues' kick eventfds (KVM ioeventfds on QueueNotify),
// serves the rings in guest RAM, and raises the interrupt through the shared InterruptStatus and the
// irqfd, so the data path never waits on the main thread's event loop. The transport stays on the main
// thread and sees this class as its device; activation, reset and close reach the worker as messages
// it picks up when its control eventfd wakes it.
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import { EventFd } from '../sys/eventfd.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { VIRTIO_MMIO_QUEUE_NOTIFY } from './abi.js';
import type { ActivatedQueues, DeviceSignals, VirtioDevice } from './device.js';
import type { InterruptStatus } from './interrupt-status.js';
import type { NotificationSource, QueueEventFd } from './notification.js';
import {
  ACK_WORD,
  IO_THREAD_ROLE,
  type IoThreadCommand,
  STOP_WORD,
  type IoThreadEvent,
  type IoThreadRequest,
  type IoThreadWorkerData,
  type ThreadedDeviceModule,
} from './io-thread-protocol.js';
import { errorMessage } from '../sys/error-message.js';

export interface IoThreadContext {
  memory: GuestMemory;
  /** The transport's InterruptStatus, which the worker raises causes in. */
  interruptStatus: InterruptStatus;
  /** The eventfd of the device's interrupt (an irqfd on a real VM), signalled from the worker. */
  interrupt: EventFd;
  /**
   * Where the guest's kicks come from besides queueNotify() calls (ioeventfds on QueueNotify, window at
   * `baseAddress`): the worker waits on their eventfds itself.
   */
  notifications?: NotificationSource;
  baseAddress?: number;
  name: string;
}

/** How long a reset may wait for the worker to finish the pass it is in. */
const RESET_TIMEOUT_MS = 10_000;

export class IoThreadDevice implements VirtioDevice {
  private signals: DeviceSignals | undefined;
  private readonly acknowledged: Int32Array;
  private sequence = 0;
  /** Why the worker can no longer serve the device (it failed, ended, or was ended). */
  private gone: Error | undefined;
  private closing = false;

  private constructor(
    private readonly worker: Worker,
    private readonly port: MessagePort,
    private readonly control: EventFd,
    private readonly kicks: QueueEventFd[],
    ack: SharedArrayBuffer,
    readonly deviceType: number,
    readonly features: bigint,
    readonly queueMaxSizes: readonly number[],
    private readonly config: Uint8Array,
    private readonly name: string,
  ) {
    this.acknowledged = new Int32Array(ack);
    worker.on('message', (event: IoThreadEvent) => this.onEvent(event));
    worker.on('error', (e) => this.lost(new Error(`${name}: I/O thread failed: ${e.message}`)));
    worker.on('exit', () => this.lost(new Error(`${name}: I/O thread has ended`)));
    // The VM's teardown closes the device; at a bare process exit the worker, asleep in epoll_wait,
    // must be woken or Node cannot join it.
    worker.unref();
    process.once('exit', this.stopAtExit);
  }

  /** Starts the worker, which builds the device from `module`; rejects with the device's own error. */
  static async start(module: ThreadedDeviceModule, context: IoThreadContext): Promise<IoThreadDevice> {
    const control = new EventFd();
    const { port1, port2 } = new MessageChannel();
    const ack = new SharedArrayBuffer(8);
    const data: IoThreadWorkerData = {
      role: IO_THREAD_ROLE,
      module,
      memory: context.memory.descriptor(),
      interruptStatus: context.interruptStatus.buffer,
      interruptFd: context.interrupt.fd,
      controlFd: control.fd,
      ack,
      port: port2,
    };
    const worker = new Worker(new URL('./io-thread-worker.js', import.meta.url), { workerData: data, transferList: [port2] });
    let ready: Extract<IoThreadEvent, { type: 'ready' }>;
    const listeners: { message?: (event: IoThreadEvent) => void; error?: (e: Error) => void; exit?: (code: number) => void } = {};
    try {
      ready = await new Promise((resolve, reject) => {
        listeners.message = (event) =>
          event.type === 'ready' ? resolve(event) : reject(new Error(event.type === 'error' ? event.message : `unexpected ${event.type}`));
        listeners.error = reject;
        listeners.exit = (code) => reject(new Error(`I/O thread exited with ${code} before its device was ready`));
        worker.once('message', listeners.message).once('error', listeners.error).once('exit', listeners.exit);
      });
    } catch (e) {
      await worker.terminate();
      control.close();
      port1.close();
      throw new Error(`${context.name}: ${errorMessage(e)}`);
    }
    // Only these: removing every 'message' listener would stop the worker's port.
    worker.off('error', listeners.error!).off('exit', listeners.exit!);
    const kicks: QueueEventFd[] = [];
    const device = new IoThreadDevice(
      worker,
      port1,
      control,
      kicks,
      ack,
      ready.deviceType,
      BigInt(ready.features),
      ready.queueMaxSizes,
      ready.config,
      context.name,
    );
    try {
      const notifyAddress = (context.baseAddress ?? 0) + VIRTIO_MMIO_QUEUE_NOTIFY;
      for (let i = 0; i < ready.queueMaxSizes.length; i++) kicks.push(context.notifications?.eventfd(notifyAddress, i) ?? plainEventFd());
      device.command({ type: 'kicks', fds: kicks.map((k) => k.eventfd.fd) });
    } catch (e) {
      await device.close();
      throw e;
    }
    return device;
  }

  get configSize(): number {
    return this.config.length;
  }

  attach(signals: DeviceSignals): void {
    this.signals = signals;
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }

  writeConfig(): void {
    // A threaded device's configuration is the snapshot it started with: nothing in it is writable.
  }

  activate({ queues, features }: ActivatedQueues): void {
    if (this.gone) throw this.gone;
    this.command({
      type: 'activate',
      features: features.toString(),
      queues: queues.map((q) => (q ? { layout: q.layout, features: q.features, maxSize: q.maxSize } : null)),
    });
  }

  queueNotify(index: number): void {
    this.kicks[index]?.eventfd.signal();
  }

  /** Returns once the worker has stopped serving the queues and forgotten them. */
  reset(): void {
    if (this.gone) return;
    Atomics.store(this.acknowledged, STOP_WORD, 1);
    const sequence = this.command({ type: 'reset' });
    const deadline = Date.now() + RESET_TIMEOUT_MS;
    for (let seen = Atomics.load(this.acknowledged, ACK_WORD); seen < sequence; seen = Atomics.load(this.acknowledged, ACK_WORD)) {
      const left = deadline - Date.now();
      if (left <= 0) {
        // Still in a pass over a ring the guest keeps filling: end the thread; the device stays broken.
        const error = new Error(`${this.name}: I/O thread did not stop within ${RESET_TIMEOUT_MS} ms of a reset; device disabled`);
        this.gone = error;
        void this.worker.terminate();
        throw error;
      }
      Atomics.wait(this.acknowledged, ACK_WORD, seen, left);
    }
  }

  /** Ends the worker (which closes the device's files) and releases the eventfds. */
  async close(): Promise<void> {
    this.closing = true;
    process.off('exit', this.stopAtExit);
    if (!this.gone) {
      const exited = new Promise((resolve) => this.worker.once('exit', resolve));
      // The worker is unref'd: without this, a process with nothing else to do would let its event loop
      // drain while this promise is pending (exit status 13, unsettled top-level await).
      this.worker.ref();
      Atomics.store(this.acknowledged, STOP_WORD, 1);
      this.command({ type: 'close' });
      await exited;
    }
    this.port.close();
    this.control.close();
    for (const k of this.kicks.splice(0)) k.detach();
  }

  private command(command: IoThreadRequest): number {
    const sequence = ++this.sequence;
    const message: IoThreadCommand = { ...command, sequence };
    this.port.postMessage(message);
    this.control.signal();
    return sequence;
  }

  private readonly stopAtExit = (): void => {
    if (this.gone) return;
    Atomics.store(this.acknowledged, STOP_WORD, 1);
    this.command({ type: 'close' });
  };

  private onEvent(event: IoThreadEvent): void {
    if (event.type === 'error')
      this.signals?.guard(() => {
        throw new Error(event.message);
      });
    else if (event.type === 'config-changed') this.signals?.configChanged();
  }

  private lost(error: Error): void {
    if (this.gone || this.closing) return;
    this.gone = error;
    this.signals?.guard(() => {
      throw error;
    });
  }
}

/** A kick eventfd only queueNotify() signals: for a device with no notification source (no VM). */
function plainEventFd(): QueueEventFd {
  const eventfd = new EventFd();
  return { eventfd, detach: () => eventfd.close() };
}
