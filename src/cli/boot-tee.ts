// The confidential part of `ts-vmm boot --tee`, in its own module so that a plain boot never loads
// the SEV stack.
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BootInputs } from '../boot/prepare.js';
import { KbsClient } from '../kbs/client.js';
import { type FullChain, parseCaChain } from '../sev/chain.js';
import type { SecretSource } from '../sev/launch.js';
import type { FirmwareBuild } from '../sev/measurement.js';
import { readLaunchSession } from '../sev/owner-files.js';
import { PolicyBit } from '../sev/policy.js';
import { secretThroughFiles, type TeeKind, teeLaunch } from '../sev/tee.js';
import { type MeasuredBootInputs, measuredBootInputs } from '../sev/ts-vmm-launch.js';
import type { ConfidentialLaunch } from '../vmm/machine.js';
import type { BootOptions } from './boot.js';
import { exportedSevChain, platformFrom } from '../sev/platform.js';

/** A measured boot's inputs (firmware entry) and its confidential launch, for `ts-vmm boot --tee`. */
export async function confidentialBoot(
  kind: TeeKind,
  options: BootOptions,
  inputs: MeasuredBootInputs,
  report: (message: string) => void,
): Promise<{ bootInputs: BootInputs; confidential: ConfidentialLaunch }> {
  return { confidential: await confidentialLaunch(kind, options, report), bootInputs: measuredBootInputs(inputs) };
}

interface LaunchInputs {
  policy: number;
  session?: { godh: Uint8Array; session: Uint8Array };
  secret?: SecretSource;
}

/**
 * `--tee`: the owner's session and secret come from a key broker (`--tee-kbs`), which releases the secret only
 * for the measurement it expects, or from sevctl-style files (`--tee-godh`, `--tee-session`, and with a secret
 * directory, `measurement.bin` written there while the VMM waits for `secret_header.bin` and
 * `secret_payload.bin`). The measurement is reported (`ts-vmm boot`: on stderr, as stdout is the guest console).
 */
async function confidentialLaunch(kind: TeeKind, options: BootOptions, report: (message: string) => void): Promise<ConfidentialLaunch> {
  if (options.teePolicy & PolicyBit.ES) throw new Error('--tee-policy: ts-vmm launches SEV guests, not SEV-ES (drop bit 2)');
  if (kind === 'sev-sim' && !options.simState) throw new Error('--tee sev-sim needs --sim-state DIR (its platform identity)');
  const inputs = options.teeKbs !== undefined ? await fromKeyBroker(options.teeKbs, options) : fromFiles(options);
  return teeLaunch({
    kind,
    simState: options.simState,
    ...inputs,
    onMeasured: (result) => {
      report(`${kind} launch measurement ${Buffer.from(result.measurement).toString('base64')}`);
      report(`${kind} secret ${result.secretInjected ? 'injected' : 'not injected'}`);
    },
    warn: report,
  });
}

function fromFiles(options: BootOptions): LaunchInputs {
  if ((options.teeGodh === undefined) !== (options.teeSession === undefined)) throw new Error('--tee-godh and --tee-session go together');
  const session = options.teeGodh && options.teeSession ? readLaunchSession(options.teeGodh, options.teeSession) : undefined;
  const dir = options.teeSecretDir;
  if (dir !== undefined) mkdirSync(dir, { recursive: true });
  return {
    policy: options.teePolicy,
    session,
    secret:
      dir === undefined
        ? undefined
        : secretThroughFiles({
            measurementFile: join(dir, 'measurement.bin'),
            headerFile: join(dir, 'secret_header.bin'),
            payloadFile: join(dir, 'secret_payload.bin'),
            timeoutMs: options.teeSecretTimeout * 1000,
          }),
  };
}

/**
 * KBS v0, as libkrun speaks it: the platform's chain and firmware build go to `auth`, whose answer is the
 * session for LAUNCH_START (policy included: the broker decides it); after LAUNCH_MEASURE, `attest` and
 * `key` give the LAUNCH_SECRET packet, or a refusal that names its step and the broker's reason.
 */
async function fromKeyBroker(url: string, options: BootOptions): Promise<LaunchInputs> {
  if (options.teeGodh || options.teeSession || options.teeSecretDir) throw new Error('--tee-kbs replaces --tee-godh, --tee-session and --tee-secret-dir');
  if (!options.teeWorkloadId) throw new Error("--tee-kbs needs --tee-workload-id (the workload's name at the key broker)");
  const { chain, build } = platformEvidence(options);
  const client = new KbsClient({ url, ca: options.teeKbsCa === undefined ? undefined : readFileSync(options.teeKbsCa) });
  const kbs = await client.auth(options.teeWorkloadId, build, chain);
  return { policy: kbs.launch.policy, session: kbs.launch, secret: (measurement) => kbs.secretFor(measurement) };
}

/** The platform's certificate chain up to AMD's ARK (sev-sim's own, or `--tee-ca-chain` on hardware) and its firmware build. */
function platformEvidence(options: BootOptions): { chain: FullChain; build: FirmwareBuild } {
  const p = platformFrom(options.simState);
  try {
    const ca = options.teeCaChain !== undefined ? parseCaChain(readFileSync(options.teeCaChain)) : p.ca;
    if (!ca) throw new Error("--tee-kbs on SEV hardware needs --tee-ca-chain FILE (AMD's ASK and ARK for this platform)");
    return { chain: { ...exportedSevChain(p.platform), ...ca }, build: p.platform.platformStatus() };
  } finally {
    p.close();
  }
}
