// `ts-vmm boot`: start a Linux kernel (bzImage or vmlinux) with an optional initrd on KVM, the serial
// console on stdin/stdout. Exit status: 0 when the guest powers off or reboots, 2 when it fails
// (triple fault, kernel panic, failed VM entry, KVM internal error), 1 when ts-vmm itself fails.
import { Command, Option } from 'commander';
import { VcpuWorkerPool } from '../kvm/vcpu-worker-pool.js';
import { PolicyBit } from '../sev/policy.js';
import type { TeeKind } from '../sev/tee.js';
import { errorMessage } from '../sys/error-message.js';
import { access, constants as fsConstants } from 'node:fs/promises';
import { addWatchOptions, checkWatchOptions, type WatchCommandOptions } from './watch-options.js';
import { memoryMiB, positiveInteger, policyArg, vcpuCount } from './arguments.js';

export const DEFAULT_MEMORY_MIB = 512;

export interface BootOptions extends WatchCommandOptions {
  kernel: string;
  initrd: string[];
  cmdline: string;
  cpus: number;
  mem: number;
  disk: string[];
  vsock?: string;
  firmware?: boolean;
  dumpRegs?: boolean;
  tee?: TeeKind;
  teePolicy: number;
  teeGodh?: string;
  teeSession?: string;
  teeSecretDir?: string;
  teeSecretTimeout: number;
  simState?: string;
  teeKbs?: string;
  teeWorkloadId?: string;
  teeKbsCa?: string;
  teeCaChain?: string;
}

/** The `boot` command's options, on `command`: for the command line, and for a run whose VM runs inside it. */
function defineBootOptions(command: Command): Command {
  command
    .requiredOption('--kernel <file>', 'bzImage or ELF vmlinux')
    .option(
      '--initrd <file>',
      'initial ramdisk (cpio archive, optionally compressed); repeatable: the kernel unpacks the archives in turn',
      (v: string, all: string[]) => [...all, v],
      [] as string[],
    )
    .option('--cmdline <string>', 'kernel command line, kept as given (device parameters are appended)', '')
    .option('--cpus <n>', 'vCPUs', vcpuCount, 1)
    .option('--mem <MiB>', 'guest RAM in MiB', memoryMiB, DEFAULT_MEMORY_MIB)
    .option('--disk <file[,ro]>', 'virtio-blk disk (repeatable; vda, vdb, ... in order)', (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--vsock <cid,uds_path>', 'virtio-vsock device with guest CID, host side on a Unix socket')
    .option('--firmware', 'start at the reset vector in the ts-vmm firmware instead of the direct 64-bit entry (implied by --tee)')
    .option('--dump-regs', 'print the registers of the failing vCPU when the guest fails')
    .addOption(
      new Option('--tee <kind>', 'measured SEV launch through the firmware entry (sev-sim: simulated firmware, memory NOT encrypted)').choices([
        'sev',
        'sev-sim',
      ]),
    )
    .option('--tee-policy <n>', 'SEV guest policy (decimal or 0x-hex)', policyArg, PolicyBit.NODBG)
    .option('--tee-godh <file>', "the guest owner's GODH certificate (base64, `ts-vmm sev session` / sevctl's *_godh.b64)")
    .option('--tee-session <file>', "the owner's launch session (base64, *_session.b64)")
    .option('--tee-secret-dir <dir>', 'write measurement.bin here and inject the secret_header.bin + secret_payload.bin the owner answers with')
    .option('--tee-secret-timeout <s>', 'seconds to wait for the secret before booting without one', positiveInteger, 60)
    .option('--tee-kbs <url>', 'take the session and the secret from this key broker (KBS v0), which checks the measurement')
    .option('--tee-workload-id <id>', "the workload's name at the key broker")
    .option('--tee-kbs-ca <file>', 'PEM CA certificate to trust for an https key broker')
    .option('--tee-ca-chain <file>', "AMD's ASK and ARK for this platform (SEV hardware with --tee-kbs)")
    .option('--sim-state <dir>', "sev-sim's platform identity (created if absent; `ts-vmm sev sim-init`)");
  return addWatchOptions(command);
}

/**
 * Reads `ts-vmm boot` arguments (after the verb) as the command line would, for a VM run inside this process: one
 * grammar, so a run's VM is the same whether it has a process of its own or not. A bad word is an error, not an exit.
 */
export function parseBootArguments(words: readonly string[]): BootOptions {
  const command = defineBootOptions(new Command('boot'))
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  command.parse(words, { from: 'user' });
  const options = command.opts<BootOptions>();
  checkWatchOptions(options);
  return options;
}

export function register(program: Command): void {
  defineBootOptions(program.command('boot').description('boot a Linux kernel on KVM; the guest serial console is stdin/stdout')).action(
    async (options: BootOptions) => {
      await checkReadable(options);
      checkWatchOptions(options);
      // The vCPU threads start their JavaScript contexts while this thread loads the VMM and builds the VM.
      const workers = VcpuWorkerPool.prestart(options.cpus);
      try {
        const { boot } = await import('./boot-machine.js');
        process.exitCode = await boot(options, workers);
      } finally {
        await workers.close();
      }
    },
  );
}

/** Input files are checked before any vCPU worker starts, so a mistyped path costs nothing to report. */
export async function checkReadable(options: BootOptions): Promise<void> {
  const files: [string, string][] = [['--kernel', options.kernel], ...options.initrd.map((file): [string, string] => ['--initrd', file])];
  for (const [option, file] of files) {
    try {
      await access(file, fsConstants.R_OK);
    } catch (e) {
      throw new Error(`${option} ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : errorMessage(e)}`);
    }
  }
}
