// `ts-vmm run --tee sev|sev-sim IMAGE`: a confidential workload image (`ts-vmm mkcw`, or buildah mkcw's disk.img
// layout) booted through a measured SEV launch. The host never sees the workload: it reads only the image's
// footer (vCPUs, memory, workload id, key broker) and checks the LUKS header; the guest gets the passphrase
// through LAUNCH_SECRET — from a key broker that verified the measurement, or, with --passphrase-file, from this
// host playing the owner — and opens the disk itself (src/oci/confidential-initramfs.ts).
import { open, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ensureBusybox } from '../assets/debian.js';
import { launchPassphrase, launchSecret } from '../kbs/passphrase.js';
import { LuksUnsupportedError } from '../luks/errors.js';
import { LuksImage } from '../luks/image.js';
import { LocalOwner } from '../sev/local-owner.js';
import { platformFrom } from '../sev/platform.js';
import { PolicyBit } from '../sev/policy.js';
import { SimulatedIdentity } from '../sev/sim-identity.js';
import type { TeeKind } from '../sev/tee.js';
import { predictTsVmmLaunchDigest, type MeasuredBootInputs } from '../sev/ts-vmm-launch.js';
import { errorMessage } from '../sys/error-message.js';
import { ensureConfidentialInitramfs } from './confidential-initramfs.js';
import { AGENT_PORT } from './guest-init.js';
import { ensureGuestAgent } from './guest-agent.js';
import { chooseKernel, type GuestKernel } from './kernel-choice.js';
import { runCacheDir } from './paths.js';
import { lockFile } from './root-disk.js';
import { GUEST_CID, RunError, type PreparedRun, type RunSettings } from './runner.js';
import { RUN_CMDLINE, type TeeRequest } from './vm-request.js';
import { decodeFooter, FOOTER_READ_BYTES, type WorkloadConfig } from './workload-footer.js';

/** The policy a local owner launches with: no debugging, no key sharing. */
export const LOCAL_OWNER_POLICY = PolicyBit.NODBG | PolicyBit.NOKS;
/** How long the VMM waits for the local owner's answer (the owner answers at once; this bounds a lost one). */
const OWNER_ANSWER_TIMEOUT_S = 60;

export interface ConfidentialRunOptions {
  tee: TeeKind;
  /** sev-sim's platform identity (created if absent). */
  simState?: string;
  /** Play the owner here: predict, verify, release this file's bytes as the passphrase. */
  passphraseFile?: string;
  /** The key broker (else the image footer's attestation URL). */
  attestationUrl?: string;
  /** The CA certificate the key broker's TLS certificate must chain to. */
  kbsCa?: string;
  /** On SEV hardware, AMD's ASK and ARK for this platform, sent to the key broker with the platform's chain. */
  caChain?: string;
}

/** The kernel and initramfs every confidential run boots; the same for every workload. */
export async function confidentialGuest(settings: RunSettings): Promise<{ kernel: GuestKernel; initrd: string }> {
  const cache = runCacheDir();
  const kernel = await chooseKernel(settings.kernel ?? {}, { log: settings.log });
  const busybox = await ensureBusybox({ log: settings.log });
  const agent = await ensureGuestAgent(cache, settings.log);
  const initrd = await ensureConfidentialInitramfs({ modulesDir: kernel.modulesDir, busybox: busybox.path, agent }, cache, settings.log);
  return { kernel, initrd };
}

/** The measured boot of a confidential run, as the owner predicts it: one disk and the vsock device. */
export async function confidentialBootInputs(kernel: string, initrd: string, cpus: number, memoryMiB: number): Promise<MeasuredBootInputs> {
  return { kernel: await readFile(kernel), initrd: await readFile(initrd), cmdline: RUN_CMDLINE, cpus, memoryMiB, virtioDevices: 2 };
}

/** The workload config at the end of `image`, refusing an image without one or with a damaged LUKS header. */
export async function readConfidentialImage(image: string): Promise<WorkloadConfig> {
  let tail: Buffer;
  const file = await open(image, 'r').catch((e: unknown) => {
    throw new RunError(`${image}: ${errorMessage(e)}`);
  });
  try {
    const { size } = await file.stat();
    const length = Math.min(size, FOOTER_READ_BYTES);
    tail = Buffer.alloc(length);
    await file.read(tail, 0, length, size - length);
  } finally {
    await file.close();
  }
  const workload = decodeFooter(tail);
  if (workload === undefined) throw new RunError(`${image}: no workload footer (KRUN): not a confidential workload image (ts-vmm mkcw makes them)`);
  try {
    await (await LuksImage.open(image)).close();
  } catch (e) {
    // The header's checksums held, and it asks for what only the kernel does (dm-integrity): the guest's cryptsetup opens it.
    if (!(e instanceof LuksUnsupportedError)) throw new RunError(`${image}: ${errorMessage(e)}`);
  }
  return workload;
}

export async function prepareConfidentialRun(imagePath: string, options: ConfidentialRunOptions, settings: RunSettings): Promise<PreparedRun> {
  const image = resolve(imagePath);
  const workload = await readConfidentialImage(image);
  const url = options.attestationUrl ?? (workload.attestation_url || undefined);
  if (options.passphraseFile === undefined && url === undefined) {
    throw new RunError(`${imagePath}: no way to the passphrase: give --passphrase-file FILE (this host is the owner) or --attestation-url URL (a key broker)`);
  }
  if (options.tee === 'sev-sim' && options.simState === undefined) throw new RunError('--tee sev-sim needs --sim-state DIR (its platform identity)');
  if (options.simState !== undefined) SimulatedIdentity.loadOrCreate(options.simState);
  const guest = await confidentialGuest(settings);
  const releaseDisk = await lockFile(`${image}.lock`);
  const runDir = await mkdtemp(join(settings.scratchDir ?? tmpdir(), 'ts-vmm-run-'));
  const cleanup = async (): Promise<void> => {
    await rm(runDir, { recursive: true, force: true });
    await releaseDisk();
  };
  try {
    let tee: TeeRequest = { kind: options.tee, ...(options.simState !== undefined ? { simState: options.simState } : {}) };
    let owner: PreparedRun['owner'];
    if (options.passphraseFile !== undefined) {
      const secret = launchSecret(launchPassphrase(await readFile(options.passphraseFile), `--passphrase-file ${options.passphraseFile}`));
      const inputs = await confidentialBootInputs(guest.kernel.vmlinuz, guest.initrd, workload.cpus, workload.ram_mib);
      const p = platformFrom(options.simState);
      let local: LocalOwner;
      try {
        local = new LocalOwner({
          pdh: p.platform.pdhCertExport().pdh,
          build: p.platform.platformStatus(),
          policy: LOCAL_OWNER_POLICY,
          expectedDigest: await predictTsVmmLaunchDigest(inputs),
          dir: runDir,
        });
      } finally {
        p.close();
      }
      tee = {
        ...tee,
        owner: {
          policy: LOCAL_OWNER_POLICY,
          godh: local.godhFile,
          session: local.sessionFile,
          secretDir: local.secretDir,
          secretTimeoutS: OWNER_ANSWER_TIMEOUT_S,
        },
      };
      owner = (stopped) =>
        local.answer(secret, stopped).then(
          () => {
            secret.fill(0);
          },
          (e: unknown) => {
            secret.fill(0);
            throw new RunError(`sev launch refused: ${errorMessage(e)}`);
          },
        );
    } else if (url !== undefined) {
      const kbs = {
        url,
        workloadId: workload.workload_id,
        ...(options.kbsCa !== undefined ? { ca: resolve(options.kbsCa) } : {}),
        ...(options.caChain !== undefined ? { caChain: resolve(options.caChain) } : {}),
      };
      tee = { ...tee, kbs };
    }
    const udsPath = join(runDir, 'vsock');
    return {
      process: { words: [], terminal: false },
      ...(owner ? { owner } : {}),
      request: {
        kernel: guest.kernel.vmlinuz,
        initrd: [guest.initrd],
        cmdline: RUN_CMDLINE,
        cpus: workload.cpus,
        memoryMiB: workload.ram_mib,
        disks: [{ path: image, readonly: false }],
        vsock: { cid: GUEST_CID, udsPath },
        tee,
      },
      agentSocket: `${udsPath}_${AGENT_PORT}`,
      diskLock: `${image}.lock`,
      cleanup,
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
