// `ts-vmm sev vmsa build|update|show`: SEV-ES VMSA files as sevctl writes and reads them.
import { readFileSync, writeFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { hexOrInt } from '../arguments.js';
import { decodeVmsa, ovmfApResetAddress, resetVmsa, updateVmsa } from '../../sev/vmsa.js';
import { say } from './common.js';

interface VmsaOptions {
  cpu: number;
  userspace: 'qemu' | 'krun';
  family?: number;
  model?: number;
  stepping?: number;
  firmware?: string;
}

function addVmsaOptions(cmd: Command): Command {
  return cmd
    .argument('<file>')
    .requiredOption('--cpu <n>', 'vCPU index (0 = boot CPU)', hexOrInt)
    .addOption(new Option('--userspace <vmm>', 'the VMM whose reset state to use').choices(['qemu', 'krun']).default('qemu'))
    .option('--family <n>', 'CPUID family', hexOrInt)
    .option('--model <n>', 'CPUID model', hexOrInt)
    .option('--stepping <n>', 'CPUID stepping', hexOrInt)
    .option('--firmware <file>', 'OVMF image (QEMU APs start at its SEV-ES reset block)');
}

function skuOf(o: VmsaOptions): { family: number; model: number; stepping: number } | undefined {
  return o.family || o.model || o.stepping ? { family: o.family ?? 0, model: o.model ?? 0, stepping: o.stepping ?? 0 } : undefined;
}

function apResetAddressOf(o: VmsaOptions): number | undefined {
  return o.userspace === 'qemu' && o.cpu > 0 && o.firmware ? ovmfApResetAddress(readFileSync(o.firmware)) : undefined;
}

export function registerVmsaCommands(sev: Command): void {
  const vmsa = sev.command('vmsa').description('SEV-ES VMSAs');
  addVmsaOptions(vmsa.command('build').description('write the reset VMSA of one vCPU as KVM and QEMU or libkrun set it up (as sevctl vmsa build)')).action(
    (file: string, o: VmsaOptions) => {
      writeFileSync(file, resetVmsa({ vmm: o.userspace, cpu: o.cpu, sku: skuOf(o), apResetAddress: apResetAddressOf(o) }));
    },
  );
  addVmsaOptions(
    vmsa.command('update').description("set the CPU signature and a QEMU AP's reset address in an existing VMSA file (as sevctl vmsa update)"),
  ).action((file: string, o: VmsaOptions) => {
    writeFileSync(file, updateVmsa(readFileSync(file), { sku: skuOf(o), apResetAddress: apResetAddressOf(o) }));
  });
  vmsa
    .command('show')
    .description("print a VMSA file's registers and segments as JSON (as sevctl vmsa show)")
    .argument('<file>')
    .action((file: string) => {
      const state = decodeVmsa(readFileSync(file));
      say(JSON.stringify(state, (_key, value: unknown) => (typeof value === 'bigint' ? `0x${value.toString(16)}` : value), 2));
    });
}
