// The ts-vmm command line. Each subcommand lives in its own module under src/cli/ and registers itself.
import { Command, CommanderError } from 'commander';
import { register as registerBoot } from './boot.js';
import { register as registerLab } from './lab.js';
import { register as registerOci } from './oci.js';
import { register as registerRun } from './run.js';
import { register as registerSetup } from './setup.js';
import { register as registerSev } from './sev.js';

export async function main(argv: string[]): Promise<number> {
  const program = new Command('ts-vmm')
    .description('A virtual machine monitor in TypeScript: KVM, virtio, Linux boot and AMD SEV confidential workloads')
    .version('0.1.0')
    .exitOverride();
  registerBoot(program);
  registerLab(program);
  registerRun(program);
  registerOci(program);
  registerSetup(program);
  registerSev(program);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    process.stderr.write(`ts-vmm: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
