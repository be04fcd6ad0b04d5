// Runs vCPUs on the calling (main) thread, yielding to the event loop after every exit. KVM_RUN
// blocks, so this suits the mocked KVM and tests rather than real guests, which use VcpuThreads.
import { stopForExit } from '../../../src/kvm/exit-policy.js';
import { busAccess } from '../../../src/kvm/io-dispatch.js';
import type { IoBuses, VcpuRunner, VcpuStop, VirtualCpu } from '../../../src/kvm/types.js';
import { errorMessage } from '../../../src/sys/error-message.js';

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

export class InlineVcpuRunner implements VcpuRunner {
  private readonly listeners: ((stop: VcpuStop) => void)[] = [];
  private stopRequested = false;
  private started = false;
  private resolveStopped!: (stops: VcpuStop[]) => void;
  readonly stopped = new Promise<VcpuStop[]>((resolve) => {
    this.resolveStopped = resolve;
  });

  constructor(
    private readonly vcpus: readonly VirtualCpu[],
    private readonly buses: IoBuses,
  ) {}

  onStop(listener: (stop: VcpuStop) => void): void {
    this.listeners.push(listener);
  }

  start(): void {
    if (this.started) throw new Error('vCPUs already started');
    this.started = true;
    void Promise.all(this.vcpus.map((vcpu) => this.runVcpu(vcpu))).then(this.resolveStopped);
  }

  async stop(): Promise<VcpuStop[]> {
    if (!this.started) return [];
    this.stopRequested = true;
    return this.stopped;
  }

  private async runVcpu(vcpu: VirtualCpu): Promise<VcpuStop> {
    let stop: VcpuStop | undefined;
    try {
      while (!stop) {
        await nextTurn();
        if (this.stopRequested) {
          stop = { vcpu: vcpu.id, reason: 'stopped', message: `vCPU ${vcpu.id}: stopped by the VMM` };
          break;
        }
        const exit = vcpu.run();
        if (exit.kind === 'io') busAccess(this.buses.pio, exit.port, exit.direction === 'out', exit.size, exit.count, exit.data);
        else if (exit.kind === 'mmio') busAccess(this.buses.mmio, exit.address, exit.isWrite, exit.data.length, 1, exit.data);
        else stop = stopForExit(exit, vcpu.id);
      }
    } catch (e) {
      stop = { vcpu: vcpu.id, reason: 'error', message: `vCPU ${vcpu.id}: ${errorMessage(e)}` };
    }
    try {
      stop.regs = vcpu.getRegs();
    } catch {
      // The registers are a diagnostic extra; the stop itself is what matters.
    }
    for (const l of this.listeners) l(stop);
    return stop;
  }
}
