// The body of a device's I/O thread: build the device, then sleep in epoll_wait on the control eventfd
// and the queues' kick eventfds, carrying out the main thread's commands before serving kicks.
import { type MessagePort, isMainThread, parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { EventFd } from '../sys/eventfd.js';
import { EPOLL_CTL_ADD, close, epollCreate, epollCtl, epollEvent, epollWait } from '../sys/sys.js';
import { GuestMemory } from '../memory/guest-memory.js';
import type { DeviceSignals, VirtioDevice } from './device.js';
import { InterruptStatus } from './interrupt-status.js';
import { ACK_WORD, IO_THREAD_ROLE, type IoThreadCommand, STOP_WORD, type IoThreadEvent, type IoThreadWorkerData } from './io-thread-protocol.js';
import { VIRTIO_MMIO_INT_VRING } from './abi.js';
import { Virtqueue } from './virtqueue.js';
import { errorMessage } from '../sys/error-message.js';

type ClosableDevice = VirtioDevice & { close(): void | Promise<void> };

const MAX_EVENTS = 16;

function post(event: IoThreadEvent): void {
  parentPort!.postMessage(event);
}

async function build(data: IoThreadWorkerData): Promise<ClosableDevice> {
  const exported = (await import(data.module.module))[data.module.exportName];
  if (typeof exported !== 'function') throw new Error(`${data.module.module} exports no class ${data.module.exportName}`);
  return new (exported as new (options: unknown) => ClosableDevice)(data.module.options);
}

async function serve(data: IoThreadWorkerData): Promise<void> {
  let device: ClosableDevice;
  try {
    device = await build(data);
  } catch (e) {
    post({ type: 'error', message: errorMessage(e) });
    return;
  }
  const thread = new IoThread(device, data);
  thread.announce();
  thread.loop();
  await thread.close();
}

/** One device served on this thread: its signals to the main thread, the commands it obeys, the kicks it serves. */
class IoThread {
  private readonly memory: GuestMemory;
  private readonly status: InterruptStatus;
  private readonly interrupt: EventFd;
  private readonly control: EventFd;
  private readonly acknowledged: Int32Array;
  private readonly port: MessagePort;
  private active = false;
  /** Queues whose device asked to be served again after a look at the control eventfd. */
  private readonly deferred = new Set<number>();
  private readonly epfd = epollCreate();
  /** Queue index of each kick eventfd. */
  private readonly kicks = new Map<number, { queue: number; eventfd: EventFd }>();
  private readonly events = new Uint8Array(MAX_EVENTS * epollEvent.size);

  constructor(
    private readonly device: ClosableDevice,
    data: IoThreadWorkerData,
  ) {
    this.memory = GuestMemory.fromDescriptor(data.memory);
    this.status = new InterruptStatus(data.interruptStatus);
    this.interrupt = new EventFd(data.interruptFd);
    this.control = new EventFd(data.controlFd);
    this.acknowledged = new Int32Array(data.ack);
    this.port = data.port;
    epollCtl(this.epfd, EPOLL_CTL_ADD, this.control.fd);
  }

  /** Attaches the device and tells the main thread what it is. */
  announce(): void {
    const signals: DeviceSignals = {
      usedBuffers: () => {
        this.status.raise(VIRTIO_MMIO_INT_VRING);
        this.interrupt.signal();
      },
      configChanged: () => post({ type: 'config-changed' }),
      guard: (work) => this.guard(work),
      defer: (queue) => {
        this.deferred.add(queue);
      },
      stopRequested: () => Atomics.load(this.acknowledged, STOP_WORD) !== 0,
    };
    this.device.attach(signals);
    const config = new Uint8Array(this.device.configSize);
    this.device.readConfig(0, config);
    post({
      type: 'ready',
      deviceType: this.device.deviceType,
      features: this.device.features.toString(),
      queueMaxSizes: [...this.device.queueMaxSizes],
      config,
    });
  }

  /** Until told to close: commands first, then the queues kicked or deferred. */
  loop(): void {
    let open = true;
    while (open) {
      // With deferred work, only look at what is ready (commands first), then go on with it.
      const ready = epollWait(this.epfd, this.events, this.deferred.size > 0 ? 0 : -1);
      if (ready.includes(this.control.fd)) {
        this.control.take();
        for (let m = receiveMessageOnPort(this.port); m && open; m = receiveMessageOnPort(this.port)) open = this.obey(m.message as IoThreadCommand);
      }
      const due = new Set(this.deferred);
      this.deferred.clear();
      for (const fd of ready) {
        const kick = this.kicks.get(fd);
        // Reading the counter clears it: several guest writes since the last read are one kick.
        if (kick && kick.eventfd.take() > 0n) due.add(kick.queue);
      }
      if (!this.active || !open) continue;
      for (const queue of due) this.guard(() => this.device.queueNotify(queue));
    }
  }

  async close(): Promise<void> {
    close(this.epfd);
    this.port.close();
    await this.device.close();
  }

  /** Carries out one command of the main thread; false once told to close. */
  private obey(command: IoThreadCommand): boolean {
    switch (command.type) {
      case 'kicks':
        for (const [queue, fd] of command.fds.entries()) {
          this.kicks.set(fd, { queue, eventfd: new EventFd(fd) });
          epollCtl(this.epfd, EPOLL_CTL_ADD, fd);
        }
        break;
      case 'activate':
        this.guard(() => {
          const features = BigInt(command.features);
          const queues = command.queues.map((q) => (q ? new Virtqueue(this.memory, q.layout, q.features, q.maxSize) : null));
          this.device.activate({ memory: this.memory, queues, features });
          this.active = true;
        });
        break;
      case 'reset':
        this.active = false;
        this.deferred.clear();
        this.guard(() => this.device.reset());
        // The pass the stop request cut short is over; the next activation starts afresh.
        Atomics.store(this.acknowledged, STOP_WORD, 0);
        break;
      case 'close':
        return false;
    }
    Atomics.store(this.acknowledged, ACK_WORD, command.sequence);
    Atomics.notify(this.acknowledged, ACK_WORD);
    return true;
  }

  /** Runs device work; an exception stops the device (reset) and is reported to the main thread. */
  private guard(work: () => void): void {
    try {
      work();
    } catch (e) {
      this.active = false;
      try {
        this.device.reset();
      } catch {
        // Already failing: the first error is the one to report.
      }
      post({ type: 'error', message: errorMessage(e) });
    }
  }
}

if (!isMainThread && (workerData as { role?: unknown } | null)?.role === IO_THREAD_ROLE) {
  await serve(workerData as IoThreadWorkerData);
}
