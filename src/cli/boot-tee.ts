// The confidential part of `ts-vmm boot --tee`, in its own module so that a plain boot never loads
// the SEV stack.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { readLaunchSession } from '../sev/owner-files.js';
import { PolicyBit } from '../sev/policy.js';
import { secretThroughFiles, teeLaunch, type TeeKind } from '../sev/tee.js';
import type { ConfidentialLaunch } from '../vmm/machine.js';
import type { BootOptions } from './boot.js';
import { measuredBootInputs, type MeasuredBootInputs } from '../sev/ts-vmm-launch.js';
import type { BootInputs } from '../boot/prepare.js';

/** A measured boot's inputs (firmware entry) and its confidential launch, for `ts-vmm boot --tee`. */
export function confidentialBoot(kind: TeeKind, options: BootOptions, inputs: MeasuredBootInputs): { bootInputs: BootInputs; confidential: ConfidentialLaunch } {
  return { confidential: confidentialLaunch(kind, options), bootInputs: measuredBootInputs(inputs) };
}

/**
 * `--tee`: the owner's session from sevctl-style files, the measurement printed (stderr; stdout is the guest
 * console) and, with a secret directory, written there as `measurement.bin` while the VMM waits for the
 * owner's `secret_header.bin` and `secret_payload.bin`.
 */
function confidentialLaunch(kind: TeeKind, options: BootOptions): ConfidentialLaunch {
  if (options.teePolicy & PolicyBit.ES) throw new Error('--tee-policy: ts-vmm launches SEV guests, not SEV-ES (drop bit 2)');
  if ((options.teeGodh === undefined) !== (options.teeSession === undefined)) throw new Error('--tee-godh and --tee-session go together');
  if (kind === 'sev-sim' && !options.simState) throw new Error('--tee sev-sim needs --sim-state DIR (its platform identity)');
  const session = options.teeGodh && options.teeSession ? readLaunchSession(options.teeGodh, options.teeSession) : undefined;
  const dir = options.teeSecretDir;
  if (dir !== undefined) mkdirSync(dir, { recursive: true });
  return teeLaunch({
    kind,
    simState: options.simState,
    policy: options.teePolicy,
    session,
    secret: dir === undefined ? undefined : secretThroughFiles({
      measurementFile: join(dir, 'measurement.bin'),
      headerFile: join(dir, 'secret_header.bin'),
      payloadFile: join(dir, 'secret_payload.bin'),
      timeoutMs: options.teeSecretTimeout * 1000,
    }),
    onMeasured: (result) => {
      process.stderr.write(`ts-vmm: ${kind} launch measurement ${Buffer.from(result.measurement).toString('base64')}\n`);
      process.stderr.write(`ts-vmm: ${kind} secret ${result.secretInjected ? 'injected' : 'not injected'}\n`);
    },
  });
}
