// The guest owner played by the launching host itself, for development (`ts-vmm run --tee ... --passphrase-file`):
// a session for the platform's PDH, the launch digest predicted from the boot inputs, and the secret released
// through LAUNCH_SECRET only when the measurement the VMM publishes verifies against that prediction. The VMM
// talks to it through files, as to any owner (`ts-vmm boot --tee-godh/--tee-session/--tee-secret-dir`); the
// transport keys stay in this process's memory.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { writeKeyFile, writeSecretPacket } from './owner-files.js';
import type { FirmwareBuild } from './measurement.js';
import { parseMeasurement, verifyMeasurement } from './measurement.js';
import { buildSecretPacket } from './secret.js';
import type { SevCertificate } from './sev-certificate.js';
import { createSession, type OwnerSession } from './session.js';

/** The launch was measured, and the measurement is not the one the owner expects: no secret was released. */
export class LaunchRefused extends Error {
  override readonly name = 'LaunchRefused';
}

export interface LocalOwnerOptions {
  pdh: SevCertificate;
  build: FirmwareBuild;
  policy: number;
  expectedDigest: Uint8Array;
  /** Where the session files go and where the VMM publishes the measurement and takes the secret. */
  dir: string;
}

export class LocalOwner {
  readonly godhFile: string;
  readonly sessionFile: string;
  readonly secretDir: string;
  readonly #session: OwnerSession;

  constructor(private readonly o: LocalOwnerOptions) {
    this.#session = createSession(o.pdh, o.policy);
    this.godhFile = join(o.dir, 'owner_godh.b64');
    this.sessionFile = join(o.dir, 'owner_session.b64');
    this.secretDir = join(o.dir, 'secret');
    writeKeyFile(this.godhFile, Buffer.from(this.#session.godh.bytes).toString('base64'));
    writeKeyFile(this.sessionFile, this.#session.session.toString('base64'));
  }

  /**
   * Waits for the launch measurement; when it verifies, answers with `secret` as a LAUNCH_SECRET packet, else
   * throws LaunchRefused. Gives up quietly once `stopped` settles (the VM is gone, nobody to answer).
   */
  async answer(secret: Uint8Array, stopped: Promise<unknown>): Promise<void> {
    let gone = false;
    void stopped.finally(() => {
      gone = true;
    });
    const measurementFile = join(this.secretDir, 'measurement.bin');
    while (!existsSync(measurementFile)) {
      if (gone) return;
      await sleep(50);
    }
    const measurement = parseMeasurement(await readFile(measurementFile));
    if (!verifyMeasurement(measurement, this.#session.keys.tik, this.o.build, this.o.policy, this.o.expectedDigest)) {
      throw new LaunchRefused(
        'the launch measurement does not match the one predicted for this kernel, initramfs, command line, vCPUs and memory: the passphrase was not released',
      );
    }
    writeSecretPacket(
      join(this.secretDir, 'secret_header.bin'),
      join(this.secretDir, 'secret_payload.bin'),
      buildSecretPacket(this.#session.keys, measurement.measure, secret),
    );
  }
}
