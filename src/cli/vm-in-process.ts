// `ts-vmm run`'s VM inside the run's own process, as libkrun runs its VM inside crun's: one Node.js start-up and
// one load of the shared modules instead of two, and the VM's threads, memory and descriptors live and die with
// the run, whose own end (or SIGKILL) the kernel completes. The VM is described by the same `ts-vmm boot`
// arguments a VMM process of its own gets (create/start, src/oci/vm-launch.ts), read by the same grammar.
import { VcpuWorkerPool } from '../kvm/vcpu-worker-pool.js';
import { bootArguments } from '../oci/vm-launch.js';
import type { RunningVm, VmLauncher } from '../oci/vm-request.js';
import { errorMessage } from '../sys/error-message.js';
import { checkReadable, parseBootArguments } from './boot.js';

/**
 * A launcher that runs the VM in this process; `watchArguments` are `ts-vmm boot`'s --trace, --stats, --timeline, and
 * `report` takes what a VMM process of its own would say on stderr (a launch's measurement, sev-sim's notice).
 */
export function launchVmInProcess(watchArguments: readonly string[], report: (message: string) => void): VmLauncher {
  return async (request) => {
    const options = parseBootArguments([...bootArguments(request).slice(1), ...watchArguments]);
    await checkReadable(options);
    // The vCPU threads start their JavaScript contexts while this thread loads the VMM and builds the VM.
    const workers = VcpuWorkerPool.prestart(options.cpus);
    const stop = new AbortController();
    const exited = (async (): Promise<Awaited<RunningVm['exited']>> => {
      try {
        const { bootMachine } = await import('./boot-machine.js');
        const exit = await bootMachine(options, workers, { consoleOutput: request.consoleOutput, stop: stop.signal, report });
        return exit.kind === 'guest-stopped' ? { ok: true, reason: 'the guest powered off' } : { ok: false, reason: exit.reason };
      } catch (e) {
        return { ok: false, reason: errorMessage(e) };
      } finally {
        await workers.close();
      }
    })();
    return { exited, stop: () => stop.abort() };
  };
}
