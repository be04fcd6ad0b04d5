// Which run a bundle asks for: a plain one (its rootfs becomes the VM's root disk), or a confidential one, selected
// as crun selects libkrun's SEV flavour: the `run.oci.handler: krun-sev` annotation (what a Kubernetes
// RuntimeClass or pod annotation puts there), or a `/krun-sev.json` in the rootfs (what buildah mkcw puts there).
// A confidential bundle's rootfs carries the encrypted image as `/disk.img`; no extra flag is needed.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readBundleConfig, type BundleConfig } from './bundle-config.js';
import type { ConfidentialRunOptions } from './confidential-run.js';
import { stateDir } from './paths.js';
import { prepareRun, RunError, type PreparedRun, type RunSettings } from './runner.js';

export const HANDLER_ANNOTATION = 'run.oci.handler';
export const CONFIDENTIAL_HANDLER = 'krun-sev';
/** libkrun's annotation for the key broker: a URL here overrides the image's. */
export const ATTESTATION_ANNOTATION = 'libkrun.attestation';
/** ts-vmm's own: `sev` (the default) or `sev-sim`, and sev-sim's identity directory. */
export const TEE_ANNOTATION = 'ts-vmm.tee';
export const SIM_STATE_ANNOTATION = 'ts-vmm.sev-sim-state';

/**
 * The container-type annotations of Kubernetes' engines (containerd's CRI plugin, CRI-O): a pod's sandbox ("pause")
 * container holds no workload and its image no encrypted disk, though a pod annotation selecting krun-sev reaches it
 * too; it runs as a plain VM.
 */
const POD_SANDBOX_MARKERS: readonly (readonly [string, string])[] = [
  ['io.kubernetes.cri.container-type', 'sandbox'],
  ['io.kubernetes.cri-o.ContainerType', 'sandbox'],
];

/** The confidential run a bundle selects: its image and launch options; undefined for a plain bundle. */
export function confidentialSelection(config: BundleConfig): { image: string; options: ConfidentialRunOptions } | undefined {
  const a = config.annotations;
  if (POD_SANDBOX_MARKERS.some(([key, value]) => a[key] === value)) return undefined;
  const handler = a[HANDLER_ANNOTATION];
  const marked = existsSync(join(config.rootfs, 'krun-sev.json'));
  if (handler !== CONFIDENTIAL_HANDLER && !(handler === undefined && marked)) return undefined;
  const image = join(config.rootfs, 'disk.img');
  if (!existsSync(image))
    throw new RunError(`${config.configPath}: a ${CONFIDENTIAL_HANDLER} bundle carries its encrypted image as /disk.img in the rootfs; ${image} is missing`);
  const tee = a[TEE_ANNOTATION] ?? 'sev';
  if (tee !== 'sev' && tee !== 'sev-sim') throw new RunError(`${config.configPath}: annotations["${TEE_ANNOTATION}"] is "${tee}", not sev or sev-sim`);
  const attestation = a[ATTESTATION_ANNOTATION];
  return {
    image,
    options: {
      tee,
      ...(tee === 'sev-sim' ? { simState: a[SIM_STATE_ANNOTATION] ?? join(stateDir(), 'sev-sim') } : {}),
      ...(attestation !== undefined && /^https?:\/\//.test(attestation) ? { attestationUrl: attestation } : {}),
    },
  };
}

/** prepareRun, or prepareConfidentialRun for a bundle that selects it. */
export async function prepareBundleRun(bundle: string, settings: RunSettings): Promise<PreparedRun> {
  const selected = confidentialSelection(readBundleConfig(bundle));
  if (selected === undefined) return prepareRun(bundle, settings);
  // Loaded only for a confidential run: the SEV, LUKS and key broker code is start-up time a plain run need not pay.
  const { prepareConfidentialRun } = await import('./confidential-run.js');
  return prepareConfidentialRun(selected.image, selected.options, settings);
}
