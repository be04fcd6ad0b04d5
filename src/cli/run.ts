// `ts-vmm run <bundle>`: an OCI bundle's process in its own micro-VM, with the process's stdout, stderr and exit
// status as ts-vmm's own. On a host without usable KVM the same command runs inside the lab, said in one line.
import { type Command, Option } from 'commander';
import { createWriteStream, openSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { stderrLog } from '../assets/debian.js';
import { AGENT_ENV, ensureGuestAgent } from '../oci/guest-agent.js';
import { kvmUnsuitableReason } from '../kvm/probe.js';
import { checkKernelPair } from '../oci/kernel-choice.js';
import { runCacheDir } from '../oci/paths.js';
import { checkBundle, runPrepared, type RunSettings } from '../oci/runner.js';
import { confidentialSelection, prepareBundleRun } from '../oci/run-selection.js';
import { readBundleConfig } from '../oci/bundle-config.js';
import type { TeeKind } from '../sev/tee.js';
import { addWatchOptions, checkWatchOptions, watchBootArguments, watching, type WatchCommandOptions } from './watch-options.js';
import { errorMessage } from '../sys/error-message.js';
import { reportFailure } from './report-failure.js';
import { launchVmInProcess } from './vm-in-process.js';

export interface RunCommandOptions extends WatchCommandOptions {
  tee?: TeeKind;
  simState?: string;
  passphraseFile?: string;
  attestationUrl?: string;
  kbsCa?: string;
  caChain?: string;
  kernel?: string;
  modules?: string;
  console?: boolean;
  consoleLog?: string;
  verbose?: boolean;
  timings?: boolean;
}

/** Each step's time since this process started, for `--timings`; printed on stderr when the run ends. */
export class RunTimings {
  private readonly steps: [number, string][] = [];

  readonly mark = (step: string): void => {
    this.steps.push([performance.now(), step]);
  };

  print(): void {
    const lines = this.steps.map(([ms, step]) => `ts-vmm: timings: ${ms.toFixed(0).padStart(7)} ms  ${step}\n`);
    process.stderr.write(lines.join(''));
  }
}

export function runSettings(options: RunCommandOptions, consoleLog?: Writable, timings?: RunTimings): RunSettings {
  const copy =
    options.console || consoleLog
      ? (bytes: Uint8Array): void => {
          if (options.console) process.stderr.write(bytes);
          consoleLog?.write(bytes);
        }
      : undefined;
  return {
    kernel: { vmlinuz: options.kernel, modulesDir: options.modules },
    log: options.verbose ? stderrLog : quietLog,
    ...(copy ? { consoleOutput: copy } : {}),
    ...(timings ? { mark: timings.mark } : {}),
  };
}

/** Opens --console-log now, so a path that cannot be written is an error before the run, not a crash during it. */
function openConsoleLog(path: string): Writable {
  let fd: number;
  try {
    fd = openSync(path, 'w', 0o600);
  } catch (e) {
    throw new Error(`--console-log ${path}: ${errorMessage(e)}`);
  }
  const log = createWriteStream('', { fd });
  log.once('error', (e) => {
    process.stderr.write(`ts-vmm: warning: --console-log ${path}: ${errorMessage(e)}; the console is no longer logged\n`);
    log.destroy();
  });
  return log;
}

/** Without --verbose only warnings and the progress of slow steps (builds, downloads) are shown. */
export const quietLog = (message: string): void => {
  if (/^(warning|downloading|unpacking|building|compiling)/.test(message)) stderrLog(message);
};

/** Where the run inside the lab writes the console; copied out to --console-log when the lab is done. */
const LAB_CONSOLE_LOG = '/tmp/ts-vmm-console.log';

/** The same run inside the lab, with every host path it names carried in at the same place. */
async function runInLab(bundle: string, options: RunCommandOptions, consoleLog: Writable | undefined): Promise<number> {
  const [{ relayInLab }, { SimulatedIdentity }] = await Promise.all([import('../lab/relay.js'), import('../sev/sim-identity.js')]);
  // The lab has no compiler: carry this host's build of the guest agent in with the bundle.
  const agent = await ensureGuestAgent(runCacheDir(), stderrLog);
  const include = [resolve(bundle), agent];
  const argv = ['run'];
  const selectedSimState = options.tee === undefined ? confidentialSelection(readBundleConfig(bundle))?.options.simState : undefined;
  if (selectedSimState !== undefined) {
    SimulatedIdentity.loadOrCreate(selectedSimState);
    include.push(resolve(selectedSimState));
  }
  if (options.tee !== undefined) {
    argv.push('--tee', options.tee);
    if (options.simState !== undefined) {
      // Made here, so the identity a key broker pins is the one the lab's launch uses (the lab's writes are lost).
      SimulatedIdentity.loadOrCreate(options.simState);
      include.push(resolve(options.simState));
      argv.push('--sim-state', resolve(options.simState));
    }
    for (const [flag, file] of [
      ['--passphrase-file', options.passphraseFile],
      ['--kbs-ca', options.kbsCa],
      ['--ca-chain', options.caChain],
    ] as const) {
      if (file === undefined) continue;
      include.push(resolve(file));
      argv.push(flag, resolve(file));
    }
    if (options.attestationUrl !== undefined) argv.push('--attestation-url', options.attestationUrl);
  }
  if (options.kernel !== undefined && options.modules !== undefined) {
    include.push(resolve(options.kernel), resolve(options.modules));
    argv.push('--kernel', resolve(options.kernel), '--modules', resolve(options.modules));
  }
  if (options.console) argv.push('--console');
  if (consoleLog) argv.push('--console-log', LAB_CONSOLE_LOG);
  if (options.verbose) argv.push('--verbose');
  if (options.timings) argv.push('--timings');
  argv.push(resolve(bundle));
  return relayInLab(argv, {
    include,
    env: { [AGENT_ENV]: agent },
    ...(consoleLog ? { copyOut: { guestPath: LAB_CONSOLE_LOG, to: consoleLog } } : {}),
  });
}

function checkTeeOptions(options: RunCommandOptions): void {
  const teeOnly = [
    options.passphraseFile && '--passphrase-file',
    options.attestationUrl && '--attestation-url',
    options.kbsCa && '--kbs-ca',
    options.caChain && '--ca-chain',
    options.simState && '--sim-state',
  ];
  const given = teeOnly.filter(Boolean);
  if (options.tee === undefined && given.length > 0) throw new Error(`${given[0]} is for a confidential run (--tee sev|sev-sim IMAGE)`);
  if (options.passphraseFile !== undefined && options.attestationUrl !== undefined)
    throw new Error('--passphrase-file and --attestation-url are two owners: give one');
}

export function register(program: Command): void {
  const command = program
    .command('run')
    .description("run an OCI bundle's process, or a confidential workload image, in a micro-VM; its output and exit status become ts-vmm's")
    .argument('<bundle>', 'OCI runtime bundle directory (config.json and its root filesystem), or with --tee an image from ts-vmm mkcw')
    .addOption(new Option('--tee <kind>', 'measured SEV launch of a confidential workload image').choices(['sev', 'sev-sim']))
    .option('--sim-state <dir>', "sev-sim's platform identity (created if absent)")
    .option('--passphrase-file <file>', "with --tee: this host is the guest owner; it checks the launch measurement, then releases the file's bytes")
    .option('--attestation-url <url>', "with --tee: the key broker (default: the image's)")
    .option('--kbs-ca <file>', "the CA certificate the key broker's TLS certificate must chain to")
    .option('--ca-chain <file>', "on SEV hardware: AMD's ASK and ARK for this platform, for the key broker")
    .option('--kernel <vmlinuz>', 'boot this kernel instead of the one from ts-vmm setup (needs --modules)')
    .option('--modules <dir>', "the kernel's lib/modules/<release> directory")
    .option('--console', 'copy the guest console (kernel messages) to stderr')
    .option('--console-log <file>', 'write the guest console to a file')
    .option('-v, --verbose', 'report each step, including where the root disk is')
    .option('--timings', 'at the end, print on stderr when each step of the run was done (ms since ts-vmm started)')
    .action(async (bundle: string, options: RunCommandOptions) => {
      let consoleLog: Writable | undefined;
      const timings = options.timings ? new RunTimings() : undefined;
      timings?.mark('command line read (Node started, modules loaded)');
      let relayed = false; // the run in the lab prints its own timings
      try {
        checkKernelPair({ vmlinuz: options.kernel, modulesDir: options.modules });
        checkTeeOptions(options);
        checkWatchOptions(options);
        if (options.consoleLog !== undefined) consoleLog = openConsoleLog(options.consoleLog);
        const labReason = kvmUnsuitableReason();
        if (labReason !== undefined) {
          // The run in the lab checks the bundle again and reports its warnings; here only errors matter.
          if (watching(options))
            throw new Error(`--trace, --stats and --timeline need a usable /dev/kvm (${labReason}); in the lab, run ts-vmm boot with them`);
          if (options.tee !== undefined) await (await import('../oci/confidential-run.js')).readConfidentialImage(bundle);
          else if (confidentialSelection(readBundleConfig(bundle)) === undefined) checkBundle(bundle, () => undefined);
          process.stderr.write(`ts-vmm: ${labReason}; running in the lab (QEMU TCG, slower)\n`);
          relayed = true;
          process.exitCode = await runInLab(bundle, options, consoleLog);
        } else {
          const settings = runSettings(options, consoleLog, timings);
          const prepared =
            options.tee === undefined
              ? await prepareBundleRun(bundle, settings)
              : await (await import('../oci/confidential-run.js')).prepareConfidentialRun(bundle, { ...options, tee: options.tee }, settings);
          const launch = launchVmInProcess(watchBootArguments(options), settings.log);
          process.exitCode = await runPrepared(prepared, launch, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }, settings);
        }
      } catch (e) {
        process.exitCode = reportFailure(e);
      }
      if (!relayed) timings?.print();
      consoleLog?.end();
      // stdin was read for the workload; it must not keep ts-vmm alive now that the workload is gone.
      process.stdin.destroy();
    });
  addWatchOptions(command);
}
