// The ts-vmm command line. Each subcommand lives in its own module under src/cli/ and registers itself.
// Only the module of the subcommand being run is loaded: start-up time is part of every VM's boot time.
import { Command, CommanderError } from 'commander';
import { errorMessage } from '../sys/error-message.js';
import { VALUED_GLOBAL_OPTIONS } from './runtime-log.js';

interface CommandModule {
  register(program: Command): void;
  /** Adjusts the arguments before commander sees them (given the verb's index), where a verb's grammar needs it. */
  rewriteArguments?(argv: string[], verbIndex: number): string[];
}

const commandModules: Record<string, () => Promise<CommandModule>> = {
  boot: () => import('./boot.js'),
  lab: () => import('./lab.js'),
  luks: () => import('./luks.js'),
  mkcw: () => import('./mkcw.js'),
  run: () => import('./run.js'),
  setup: () => import('./setup.js'),
  sev: () => import('./sev.js'),
  kbs: () => import('./kbs.js'),
  oci: () => import('./oci.js'),
};

/** Subcommands registered by a module of another name. */
const moduleOf: Record<string, string> = {
  create: 'oci',
  start: 'oci',
  state: 'oci',
  kill: 'oci',
  delete: 'oci',
  ps: 'oci',
  features: 'oci',
  pause: 'oci',
  resume: 'oci',
  'oci-monitor': 'oci',
  exec: 'oci',
  'oci-exec-relay': 'oci',
};

export async function main(argv: string[]): Promise<number> {
  const program = new Command('ts-vmm')
    .description('A virtual machine monitor in TypeScript: KVM, virtio, Linux boot and AMD SEV confidential workloads')
    .version('0.1.0')
    .exitOverride();
  const verbIndex = verbAt(argv, 2);
  const name = verbIndex === undefined ? undefined : argv[verbIndex];
  const wanted = name === undefined ? undefined : (moduleOf[name] ?? (name in commandModules ? name : undefined));
  // `ts-vmm --version` alone (podman asks its runtime that) needs no subcommand; help or an unknown word loads
  // every subcommand so commander can list or reject them.
  const versionQuery = argv.length === 3 && (argv[2] === '--version' || argv[2] === '-V');
  const modules = versionQuery ? [] : wanted === undefined ? Object.values(commandModules) : [commandModules[wanted]!];
  let args = argv;
  for (const load of modules) {
    const module = await load();
    module.register(program);
    if (verbIndex !== undefined && wanted !== undefined) args = module.rewriteArguments?.(args, verbIndex) ?? args;
  }
  try {
    await program.parseAsync(args);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    process.stderr.write(`ts-vmm: ${errorMessage(e)}\n`);
    return 1;
  }
}

/** Where the first word from `from` on is that is neither an option nor the value of a runtime global option (`--root DIR create`). */
function verbAt(args: readonly string[], from: number): number | undefined {
  for (let i = from; i < args.length; i++) {
    const arg = args[i]!;
    if (VALUED_GLOBAL_OPTIONS.includes(arg)) i++;
    else if (!arg.startsWith('-')) return i;
  }
  return undefined;
}
