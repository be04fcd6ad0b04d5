// What `ts-vmm boot --tee sev|sev-sim` needs from the SEV side: the launch backend for the chosen firmware,
// the owner's session from files, and a secret exchange through files (the VMM writes the measurement, the
// owner answers with a secret packet) until an attestation server plugs in its own SecretSource.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConfidentialLaunch } from '../vmm/machine.js';
import type { SevLaunchBackend } from './firmware.js';
import { KernelSevLaunch, type EncryptingVm } from './kvm-sev.js';
import { measuredLaunch, type MeasuredLaunchResult, type SecretSource } from './launch.js';
import { SevDevice } from './psp.js';
import { SevSimulator } from './sev-sim.js';
import { SimulatedIdentity } from './sim-identity.js';
import { bootPlanRegions } from './ts-vmm-launch.js';

export type TeeKind = 'sev' | 'sev-sim';

export interface OpenedBackend {
  backend: SevLaunchBackend;
  close(): void;
}

/**
 * The hardware firmware (through /dev/sev and this VM) or sev-sim with the identity kept in `simState`, which says
 * through `warn` (default: stderr) that it encrypts nothing.
 */
export function openLaunchBackend(kind: TeeKind, vm: EncryptingVm, simState?: string, warn?: (message: string) => void): OpenedBackend {
  if (kind === 'sev-sim') {
    if (!simState) throw new Error('sev-sim needs a state directory for its platform identity');
    return { backend: new SevSimulator(SimulatedIdentity.loadOrCreate(simState), warn ? { warn } : {}), close: () => undefined };
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
    // Whole or not at all: the owner acts on the file the moment it appears.
    writeFileSync(`${files.measurementFile}.partial`, measurement);
    renameSync(`${files.measurementFile}.partial`, files.measurementFile);
    const deadline = Date.now() + files.timeoutMs;
    while (!(existsSync(files.headerFile) && existsSync(files.payloadFile))) {
      if (Date.now() >= deadline) return undefined;
      await sleep(files.pollMs ?? 100);
    }
    return { header: readFileSync(files.headerFile), payload: readFileSync(files.payloadFile) };
  };
}

export interface TeeLaunchOptions {
  kind: TeeKind;
  /** sev-sim's platform identity directory. */
  simState?: string;
  policy: number;
  /** The owner's GODH certificate and session; without them the launch cannot be attested. */
  session?: { godh: Uint8Array; session: Uint8Array };
  secret?: SecretSource;
  /** Told the launch's result (the measurement, whether a secret went in) before any vCPU runs. */
  onMeasured?: (result: MeasuredLaunchResult) => void;
  /** Where sev-sim's notice that it encrypts nothing goes (default: stderr). */
  warn?: (message: string) => void;
}

/**
 * The SEV launch as the VMM's confidential-launch hook: INIT right after the VM exists (KVM refuses it once
 * vCPUs do), the measured launch of the boot plan once it is in guest RAM. The backend is closed when the
 * launch ends; the VM keeps running on the state the firmware set up.
 */
export function teeLaunch(options: TeeLaunchOptions): ConfidentialLaunch {
  let opened: OpenedBackend | undefined;
  return {
    // sev-sim encrypts nothing: a C-bit in the guest's page tables would be a reserved physical-address bit.
    encryptsMemory: options.kind === 'sev',
    initVm(vm) {
      opened = openLaunchBackend(options.kind, vm, options.simState, options.warn);
      opened.backend.init(false);
    },
    async launch({ memory, boot }) {
      if (!opened) throw new Error('the confidential launch was not initialised with its VM');
      try {
        const result = await measuredLaunch({
          backend: opened.backend,
          image: { memory, regions: bootPlanRegions(boot.plan) },
          policy: options.policy,
          session: options.session,
          secret: options.secret,
          initialized: true,
        });
        options.onMeasured?.(result);
      } finally {
        opened.close();
      }
    },
  };
}
