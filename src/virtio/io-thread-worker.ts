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
  const memory = GuestMemory.fromDescriptor(data.memory);
  const status = new InterruptStatus(data.interruptStatus);
  const interrupt = new EventFd(data.interruptFd);
  const control = new EventFd(data.controlFd);
  const acknowledged = new Int32Array(data.ack);
  const port: MessagePort = data.port;
  let active = false;
  /** Queues whose device asked to be served again after a look at the control eventfd. */
  const deferred = new Set<number>();

  const fail = (e: unknown): void => {
    active = false;
    try {
      device.reset();
    } catch {
      // Already failing: the first error is the one to report.
    }
    post({ type: 'error', message: errorMessage(e) });
  };
  const guard = (work: () => void): void => {
    try {
      work();
    } catch (e) {
      fail(e);
    }
  };
  const signals: DeviceSignals = {
    usedBuffers: () => {
      status.raise(VIRTIO_MMIO_INT_VRING);
      interrupt.signal();
    },
    configChanged: () => post({ type: 'config-changed' }),
    guard,
    defer: (queue) => {
      deferred.add(queue);
    },
    stopRequested: () => Atomics.load(acknowledged, STOP_WORD) !== 0,
  };
  device.attach(signals);
  const config = new Uint8Array(device.configSize);
  device.readConfig(0, config);
  post({ type: 'ready', deviceType: device.deviceType, features: device.features.toString(), queueMaxSizes: [...device.queueMaxSizes], config });

  const epfd = epollCreate();
  epollCtl(epfd, EPOLL_CTL_ADD, control.fd);
  /** Queue index of each kick eventfd. */
  const kicks = new Map<number, { queue: number; eventfd: EventFd }>();
  const events = new Uint8Array(MAX_EVENTS * epollEvent.size);

  /** Carries out the commands posted so far; false once told to close. */
  const obey = (command: IoThreadCommand): boolean => {
    switch (command.type) {
      case 'kicks':
        command.fds.forEach((fd, queue) => {
          kicks.set(fd, { queue, eventfd: new EventFd(fd) });
          epollCtl(epfd, EPOLL_CTL_ADD, fd);
        });
        break;
      case 'activate':
        guard(() => {
          const features = BigInt(command.features);
          const queues = command.queues.map((q) => (q ? new Virtqueue(memory, q.layout, q.features, q.maxSize) : null));
          device.activate({ memory, queues, features });
          active = true;
        });
        break;
      case 'reset':
        active = false;
        deferred.clear();
        guard(() => device.reset());
        // The pass the stop request cut short is over; the next activation starts afresh.
        Atomics.store(acknowledged, STOP_WORD, 0);
        break;
      case 'close':
        return false;
    }
    Atomics.store(acknowledged, ACK_WORD, command.sequence);
    Atomics.notify(acknowledged, ACK_WORD);
    return true;
  };

  let open = true;
  while (open) {
    // With deferred work, only look at what is ready (commands first), then go on with it.
    const ready = epollWait(epfd, events, deferred.size > 0 ? 0 : -1);
    if (ready.includes(control.fd)) {
      control.take();
      for (let m = receiveMessageOnPort(port); m && open; m = receiveMessageOnPort(port)) open = obey(m.message as IoThreadCommand);
    }
    const due = new Set(deferred);
    deferred.clear();
    for (const fd of ready) {
      const kick = kicks.get(fd);
      // Reading the counter clears it: several guest writes since the last read are one kick.
      if (kick && kick.eventfd.take() > 0n) due.add(kick.queue);
    }
    if (!active || !open) continue;
    for (const queue of due) guard(() => device.queueNotify(queue));
  }
  close(epfd);
  port.close();
  await device.close();
}

if (!isMainThread && (workerData as { role?: unknown } | null)?.role === IO_THREAD_ROLE) {
  await serve(workerData as IoThreadWorkerData);
}
