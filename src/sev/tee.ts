// What `ts-vmm boot --tee sev|sev-sim` needs from the SEV side: the launch backend for the chosen firmware,
// the owner's session from files, and a secret exchange through files (the VMM writes the measurement, the
// owner answers with a secret packet) until an attestation server plugs in its own SecretSource.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { SevLaunchBackend } from './firmware.js';
import { KernelSevLaunch, type EncryptingVm } from './kvm-sev.js';
import type { SecretSource } from './launch.js';
import { SevDevice } from './psp.js';
import { SevSimulator } from './sev-sim.js';
import { SimulatedIdentity } from './sim-identity.js';

export type TeeKind = 'sev' | 'sev-sim';

export interface OpenedBackend {
  backend: SevLaunchBackend;
  close(): void;
}

/** The hardware firmware (through /dev/sev and this VM) or sev-sim with the identity kept in `simState`. */
export function openLaunchBackend(kind: TeeKind, vm: EncryptingVm, simState?: string): OpenedBackend {
  if (kind === 'sev-sim') {
    if (!simState) throw new Error('sev-sim needs a state directory for its platform identity');
    return { backend: new SevSimulator(SimulatedIdentity.loadOrCreate(simState)), close: () => undefined };
  }
  const device = SevDevice.open();
  const launch = new KernelSevLaunch(vm, device);
  return {
    backend: launch,
    close: () => {
      launch.close();
      device.close();
    },
  };
}

export interface SecretFiles {
  /** Where the VMM writes MEASURE || MNONCE for the owner. */
  measurementFile: string;
  /** Where the owner puts the packet (`ts-vmm sev secret build` writes both). */
  headerFile: string;
  payloadFile: string;
  /** How long to wait for the owner; no secret is injected when it passes. */
  timeoutMs: number;
  pollMs?: number;
}

/**
 * A SecretSource that publishes the measurement and waits for the owner's packet files. The owner writes the
 * payload first and the header last (as `sev secret build` does), so a present header means a whole packet.
 */
export function secretThroughFiles(files: SecretFiles): SecretSource {
  return async (measurement) => {
    writeFileSync(files.measurementFile, measurement);
    const deadline = Date.now() + files.timeoutMs;
    while (!(existsSync(files.headerFile) && existsSync(files.payloadFile))) {
      if (Date.now() >= deadline) return undefined;
      await sleep(files.pollMs ?? 100);
    }
    return { header: readFileSync(files.headerFile), payload: readFileSync(files.payloadFile) };
  };
}
