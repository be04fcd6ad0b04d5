// `ts-vmm sev ...`: the guest owner's tools (close to sevctl's commands and file formats) and the platform
// commands, against the SEV hardware (/dev/sev) or the simulated firmware's state directory (--sim-state).
import type { Command } from 'commander';
import { Option } from 'commander';
import { registerChainCommands } from './sev/chain.js';
import { registerMeasurementCommands } from './sev/measurement.js';
import { registerPlatformCommands } from './sev/platform.js';
import { registerVmsaCommands } from './sev/vmsa.js';

export function register(program: Command): void {
  const sev = program.command('sev').description("AMD SEV: platform commands and the guest owner's tools (sevctl-compatible files)");
  const simState = new Option('--sim-state <dir>', 'use the simulated firmware (sev-sim) kept in this state directory instead of /dev/sev');
  registerPlatformCommands(sev, simState);
  registerChainCommands(sev, simState);
  registerMeasurementCommands(sev);
  registerVmsaCommands(sev);
}
