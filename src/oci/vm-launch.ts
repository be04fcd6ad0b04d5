// Runs a VM in its own `ts-vmm boot` process, as Firecracker runs one VMM process per microVM: for a container
// whose VM outlives the command that made it (create/start, whose monitor records the VM's pid) and for mkcw's
// integrity build. The vCPU threads, guest memory and devices live and die with that process, so tearing a VM
// down is one SIGKILL that the kernel completes (KVM, memory and descriptors released) whatever state the VM is
// in. The process is put in its own process group, so a Ctrl-C at the terminal reaches ts-vmm (which forwards it
// to the workload) and not the VMM. If ts-vmm itself is killed, the guest agent loses its host connection and
// powers the VM off. `ts-vmm run` runs its VM inside the run's own process instead (src/cli/vm-in-process.ts).
import { spawn } from 'node:child_process';
import { cliEntry } from '../sys/project-paths.js';
import type { RunningVm, TeeRequest, VmLauncher, VmRequest } from './vm-request.js';

/** Exit statuses of `ts-vmm boot` (src/cli/boot.ts). */
const BOOT_STATUS: Record<number, string> = { 0: 'the guest powered off', 1: 'the VMM failed', 2: 'the guest failed' };

export function bootArguments(request: VmRequest): string[] {
  const args = [
    'boot',
    '--kernel',
    request.kernel,
    ...request.initrd.flatMap((archive) => ['--initrd', archive]),
    '--cmdline',
    request.cmdline,
    '--cpus',
    String(request.cpus),
    '--mem',
    String(request.memoryMiB),
  ];
  for (const disk of request.disks) {
    if (disk.path.includes(',')) throw new Error(`${disk.path}: a disk path cannot contain a comma (ts-vmm boot --disk FILE[,ro])`);
    args.push('--disk', disk.readonly ? `${disk.path},ro` : disk.path);
  }
  args.push('--vsock', `${request.vsock.cid},${request.vsock.udsPath}`);
  if (request.tee) args.push(...teeArguments(request.tee));
  return args;
}

function teeArguments(tee: TeeRequest): string[] {
  const args = ['--tee', tee.kind];
  if (tee.simState !== undefined) args.push('--sim-state', tee.simState);
  if (tee.kbs) {
    args.push('--tee-kbs', tee.kbs.url, '--tee-workload-id', tee.kbs.workloadId);
    if (tee.kbs.ca !== undefined) args.push('--tee-kbs-ca', tee.kbs.ca);
    if (tee.kbs.caChain !== undefined) args.push('--tee-ca-chain', tee.kbs.caChain);
  }
  if (tee.owner) {
    const o = tee.owner;
    args.push('--tee-policy', `0x${o.policy.toString(16)}`, '--tee-godh', o.godh, '--tee-session', o.session);
    args.push('--tee-secret-dir', o.secretDir, '--tee-secret-timeout', String(o.secretTimeoutS));
  }
  return args;
}

export const launchVm: VmLauncher = async (request: VmRequest): Promise<RunningVm> => {
  const child = spawn(process.execPath, [cliEntry(), ...bootArguments(request)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  child.stdout.on('data', (chunk: Buffer) => request.consoleOutput(chunk));
  let diagnostics = '';
  child.stderr.on('data', (chunk: Buffer) => {
    diagnostics = (diagnostics + chunk.toString()).slice(-4096);
  });
  const exited = new Promise<{ ok: boolean; reason: string }>((resolve) => {
    child.on('error', (e) => resolve({ ok: false, reason: `cannot start the VMM: ${e.message}` }));
    child.on('close', (code, signal) => {
      const said = diagnostics
        .trim()
        .split('\n')
        .at(-1)
        ?.replace(/^ts-vmm: /, '');
      if (signal) resolve({ ok: false, reason: `the VMM was stopped (${signal})` });
      else resolve({ ok: code === 0, reason: said || BOOT_STATUS[code ?? 1] || `the VMM exited with status ${code}` });
    });
  });
  const vm: RunningVm = {
    ...(child.pid !== undefined ? { pid: child.pid } : {}),
    exited,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
  return vm;
};
