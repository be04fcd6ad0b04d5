// A stand-in for the VM in tests of the run logic: the real guest agent as a host process, connected over the
// Unix socket the vsock device would use, running the prepared run's process without chroot or mounts. Stopping
// it kills it.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { parseBundleConfig } from '../../src/oci/bundle-config.js';
import { AGENT_PORT, processWords } from '../../src/oci/guest-init.js';
import type { PreparedRun } from '../../src/oci/runner.js';
import type { RunningVm, VmLauncher } from '../../src/oci/vm-request.js';

export interface StandIn {
  launch: VmLauncher;
  /** How many times stop() was called. */
  stops(): number;
}

export function agentVm(agent: string): StandIn {
  let stops = 0;
  const launch: VmLauncher = async (request) => {
    const child = spawn(agent, ['--unix', `${request.vsock.udsPath}_${AGENT_PORT}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr.on('data', (d: Buffer) => request.consoleOutput(d));
    const exited = new Promise<{ ok: boolean; reason: string }>((resolve) =>
      child.on('close', (code, signal) => resolve({ ok: code === 0, reason: `exited ${code ?? signal}` })),
    );
    const vm: RunningVm = {
      pid: child.pid!,
      exited,
      stop: () => {
        stops++;
        child.kill('SIGKILL');
      },
    };
    return vm;
  };
  return { launch, stops: () => stops };
}

/** A prepared run of `args` with no kernel or disks, for stand-in VMs; `cleaned()` tells whether cleanup ran. */
export function standInRun(dir: string, name: string, args: string[] = ['x']): { run: PreparedRun; cleaned: () => boolean } {
  const runDir = mkdtempSync(join(dir, `${name}-`));
  let cleaned = false;
  const config = parseBundleConfig(JSON.stringify({ ociVersion: '1.0.2', root: { path: 'r' }, process: { args, cwd: '/' } }), dir);
  const run: PreparedRun = {
    process: { words: processWords(config.process), terminal: config.process.terminal },
    request: { kernel: 'k', initrd: ['i'], cmdline: '', cpus: 1, memoryMiB: 64, disks: [], vsock: { cid: 3, udsPath: join(runDir, 'vsock') } },
    agentSocket: join(runDir, `vsock_${AGENT_PORT}`),
    cleanup: async () => {
      cleaned = true;
    },
  };
  return { run, cleaned: () => cleaned };
}
