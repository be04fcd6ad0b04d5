// `ts-vmm lab -- <ts-vmm arguments>`: runs a ts-vmm command inside the lab (a TCG-emulated machine
// with nested SVM, hence a working /dev/kvm) and relays its output and exit status.
import type { Command } from 'commander';
import { positiveInteger } from './arguments.js';
import { reportFailure } from './report-failure.js';
import { relayInLab } from '../lab/relay.js';
import { LAB_DEFAULT_CPUS } from '../lab/run.js';

export function register(program: Command): void {
  program
    .command('lab')
    .description('run a ts-vmm command inside the lab: qemu (TCG, -cpu max) booting the stock Debian kernel with KVM')
    .argument('<args...>', 'ts-vmm arguments (or, with --exec, a program and its arguments), after --')
    .option('--exec', 'run the arguments as a program in the lab instead of as a ts-vmm command')
    .option(
      '-i, --include <path>',
      'host file or directory to carry in at the same path (repeatable)',
      (path: string, paths: string[]) => [...paths, path],
      [] as string[],
    )
    .option('--timeout <seconds>', 'give up after this many seconds', positiveInteger, 600)
    .option(
      '--idle-stall <seconds>',
      'give up sooner when the lab prints nothing and its QEMU uses no CPU for this long (a stalled lab; an idle command looks the same)',
      positiveInteger,
    )
    .option('--memory <MiB>', 'lab guest memory', positiveInteger, 2048)
    .option('--cpus <n>', 'lab guest vCPUs (more than one has been seen to hang the lab kernel)', positiveInteger, LAB_DEFAULT_CPUS)
    .option('--console', 'also show the lab guest serial console on stderr')
    .option('--engines', 'also carry the container engines (containerd, podman, conmon, runc) and their configuration')
    .action(
      async (
        args: string[],
        options: {
          exec?: boolean;
          include: string[];
          timeout: number;
          idleStall?: number;
          memory: number;
          cpus: number;
          console?: boolean;
          engines?: boolean;
        },
      ) => {
        // The command's own status is relayed; the lab failing (timed out, stalled, no QEMU) is 125, as a run's failure.
        process.exitCode = await relayInLab(args, {
          exec: options.exec ?? false,
          include: options.include,
          timeoutMs: options.timeout * 1000,
          ...(options.idleStall === undefined ? {} : { idleStallMs: options.idleStall * 1000 }),
          memoryMiB: options.memory,
          cpus: options.cpus,
          showConsole: options.console ?? false,
          engines: options.engines ?? false,
        }).catch(reportFailure);
      },
    );
}
