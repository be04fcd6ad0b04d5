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
import type { ExitRecorder, ExitRecorderDescriptor } from './exit-recorder.js';
import type { VcpuExit } from './types.js';

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
  /** Present when the VMM watches its exits (--trace, --stats, --timeline). */
  recorder?: ExitRecorderDescriptor;
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
    // The recorder's module is loaded only when the VMM watches: an unwatched vCPU starts without it.
    const recorder = data.recorder ? new (await import('./exit-recorder.js')).ExitRecorder(data.recorder) : undefined;
    // Published before the stop flag is first read: a stop() that misses the tid finds the flag instead.
    Atomics.store(control, THREAD_ID, gettid());
    const handle = (exit: VcpuExit) => handleExit(exit, vcpu.id, local.pio, local.mmio, mailbox);
    stop = recorder ? recordedLoop(vcpu, handle, control, recorder) : runLoop(vcpu, handle, control);
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

type ExitHandler = (exit: VcpuExit) => VcpuStop | undefined;

function runLoop(vcpu: Vcpu, handle: ExitHandler, control: Int32Array): VcpuStop {
  for (;;) {
    if (Atomics.load(control, STOP_REQUESTED) !== 0) return stoppedByVmm(vcpu.id);
    const stop = handle(vcpu.run());
    if (stop) return stop;
  }
}

/** The same loop, each exit timed and recorded once handled (a read's value is then known). */
function recordedLoop(vcpu: Vcpu, handle: ExitHandler, control: Int32Array, recorder: ExitRecorder): VcpuStop {
  const enter = () => vcpu.run();
  for (;;) {
    if (Atomics.load(control, STOP_REQUESTED) !== 0) return stoppedByVmm(vcpu.id);
    const { exit, timeMs } = recorder.run(enter);
    const stop = handle(exit);
    recorder.record(exit, timeMs);
    if (stop) return stop;
  }
}

const stoppedByVmm = (vcpu: number): VcpuStop => ({ vcpu, reason: 'stopped', message: `vCPU ${vcpu}: stopped by the VMM` });

function handleExit(exit: VcpuExit, vcpu: number, localPio: Bus, localMmio: Bus, mailbox: MailboxClient): VcpuStop | undefined {
  if (exit.kind === 'io') {
    const isWrite = exit.direction === 'out';
    if (localPio.find(exit.port)) busAccess(localPio, exit.port, isWrite, exit.size, exit.count, exit.data);
    else mailbox.access(isWrite ? MailboxOp.PioWrite : MailboxOp.PioRead, exit.port, exit.size, exit.count, exit.data);
    return undefined;
  }
  if (exit.kind === 'mmio') {
    if (localMmio.find(exit.address)) busAccess(localMmio, exit.address, exit.isWrite, exit.data.length, 1, exit.data);
    else mailbox.access(exit.isWrite ? MailboxOp.MmioWrite : MailboxOp.MmioRead, exit.address, exit.data.length, 1, exit.data);
    return undefined;
  }
  return stopForExit(exit, vcpu);
}

if (!isMainThread && (workerData as { role?: unknown } | null)?.role === VCPU_WORKER_ROLE) {
  // Listening only now, after every import above has loaded: a `close` can never cut a load short.
  parentPort!.once('message', (command: VcpuWorkerCommand<VcpuWorkerData>) => {
    if (command.type === 'run') void main(command.data);
    else parentPort!.close();
  });
}
