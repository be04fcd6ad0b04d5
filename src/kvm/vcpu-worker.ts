// The body of a vCPU thread: KVM_RUN in a loop. Accesses to vCPU-local ranges are answered here;
// every other I/O or MMIO exit goes to the device thread through the mailbox. The loop ends when
// the main thread sets the stop flag (and kicks the thread out of KVM_RUN), or on an exit that
// stops the vCPU; either way the main thread receives one `stopped` message.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { Bus } from '../devices/bus.js';
import type { GuestMemoryDescriptor } from '../memory/guest-memory.js';
import { stopForExit } from './exit-policy.js';
import { busAccess } from './io-dispatch.js';
import { buildLocalBuses, type LocalRange } from './local-devices.js';
import { Mailbox, MailboxClient, MailboxOp } from './mailbox.js';
import { gettid } from '../sys/sys.js';
import type { VcpuStop } from './types.js';
import { Vcpu, type VcpuDescriptor } from './vcpu.js';
import { VCPU_WORKER_ROLE, type VcpuWorkerCommand } from './vcpu-worker-pool.js';
import { errorMessage } from '../sys/error-message.js';

/** The vCPU a started worker is to run, sent once it is needed. */
export interface VcpuWorkerData {
  vcpu: VcpuDescriptor;
  mailbox: SharedArrayBuffer;
  /** The order counter every vCPU of the machine shares (createAccessOrder). */
  accessOrder: SharedArrayBuffer;
  /** Int32Array: [STOP_REQUESTED] non-zero asks the loop to stop; [THREAD_ID] is this thread's tid. */
  control: SharedArrayBuffer;
  localRanges: LocalRange[];
  memory?: GuestMemoryDescriptor;
}

export const STOP_REQUESTED = 0;
export const THREAD_ID = 1;
export const CONTROL_WORDS = 2;

export interface VcpuWorkerMessage {
  type: 'stopped';
  stop: VcpuStop;
}

async function main(data: VcpuWorkerData): Promise<void> {
  const post = (message: VcpuWorkerMessage) => parentPort!.postMessage(message);
  const vcpu = Vcpu.fromDescriptor(data.vcpu);
  const mailbox = new MailboxClient(new Mailbox(data.mailbox, data.accessOrder));
  const control = new Int32Array(data.control);
  let stop: VcpuStop;
  try {
    const local = await buildLocalBuses(data.localRanges, vcpu.id, data.memory);
    // Published before the stop flag is first read: a stop() that misses the tid finds the flag instead.
    Atomics.store(control, THREAD_ID, gettid());
    stop = runLoop(vcpu, local.pio, local.mmio, mailbox, control);
    // The stop is reported after every posted write took effect, and a device error outranks it.
    mailbox.flush();
    mailbox.throwIfPostedFailed();
  } catch (e) {
    stop = { vcpu: vcpu.id, reason: 'error', message: `vCPU ${vcpu.id}: ${errorMessage(e)}` };
  }
  // No more kicks: this thread is about to end and its tid may be reused.
  Atomics.store(control, THREAD_ID, 0);
  try {
    stop.regs = vcpu.getRegs();
  } catch {
    // The registers are a diagnostic extra; the stop itself is what matters.
  }
  mailbox.close();
  post({ type: 'stopped', stop });
}

function runLoop(vcpu: Vcpu, localPio: Bus, localMmio: Bus, mailbox: MailboxClient, control: Int32Array): VcpuStop {
  for (;;) {
    if (Atomics.load(control, STOP_REQUESTED) !== 0) return { vcpu: vcpu.id, reason: 'stopped', message: `vCPU ${vcpu.id}: stopped by the VMM` };
    const exit = vcpu.run();
    if (exit.kind === 'io') {
      const isWrite = exit.direction === 'out';
      if (localPio.find(exit.port)) busAccess(localPio, exit.port, isWrite, exit.size, exit.count, exit.data);
      else mailbox.access(isWrite ? MailboxOp.PioWrite : MailboxOp.PioRead, exit.port, exit.size, exit.count, exit.data);
    } else if (exit.kind === 'mmio') {
      if (localMmio.find(exit.address)) busAccess(localMmio, exit.address, exit.isWrite, exit.data.length, 1, exit.data);
      else mailbox.access(exit.isWrite ? MailboxOp.MmioWrite : MailboxOp.MmioRead, exit.address, exit.data.length, 1, exit.data);
    } else {
      const stop = stopForExit(exit, vcpu.id);
      if (stop) return stop;
    }
  }
}

if (!isMainThread && (workerData as { role?: unknown } | null)?.role === VCPU_WORKER_ROLE) {
  // Listening only now, after every import above has loaded: a `close` can never cut a load short.
  parentPort!.once('message', (command: VcpuWorkerCommand<VcpuWorkerData>) => {
    if (command.type === 'run') void main(command.data);
    else parentPort!.close();
  });
}
