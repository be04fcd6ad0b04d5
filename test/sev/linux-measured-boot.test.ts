// `ts-vmm boot --tee sev-sim` with the stock Debian kernel, as a guest owner and a host would run it: the
// owner pins the platform's PDH, makes a session, predicts the launch from the boot inputs, checks the
// measurement the VMM publishes and answers with a secret, which the measured firmware copies into the
// initrd's secret slot and clears from the secret page: the guest's init reads it as a file, as it must on
// hardware, where the page reads as ciphertext outside the guest's own encrypted mapping. One Linux
// boot; the lab pays ~20-30 s for it.
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SECRET_SLOT_FILE } from '../../src/initramfs/secret-slot.js';
import { SEV_SECRET_PAGE, SEV_SECRET_PAGE_SIZE } from '../../src/sev/launch.js';
import { parseMeasurement, verifyMeasurement } from '../../src/sev/measurement.js';
import { sessionFileNames, writeSecretPacket, writeSessionFiles } from '../../src/sev/owner-files.js';
import { PolicyBit } from '../../src/sev/policy.js';
import { buildSecretPacket, buildSecretTable } from '../../src/sev/secret.js';
import { createSession } from '../../src/sev/session.js';
import { SimulatedPlatform } from '../../src/sev/sev-sim.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { predictTsVmmLaunchDigest } from '../../src/sev/ts-vmm-launch.js';
import { ExitStatus } from '../../src/vmm/exit-status.js';
import { ADMIN_TOKEN, startTestKbs } from '../kbs/harness.js';
import { guestAssets, tsVmmBoot, type Guest } from '../vmm/guest-fixtures.js';

const BOOT_TIMEOUT_MS = 240_000;
const CMDLINE = 'console=ttyS0 quiet';
const MEMORY_MIB = 256;
const SECRET_GUID = '736869e5-84f0-4973-92ec-06879ce3da0b';

// The guest prints the slot file and the secret page as hex between markers, then powers off.
const hexOf = (source: string) => `$(${source} 2>/dev/null | od -A n -v -t x1 | tr -d ' \\n')`;
const READ_SECRET = [
  'mount -t devtmpfs dev /dev',
  `echo "SECRET-FILE-BEGIN ${hexOf(`cat /${SECRET_SLOT_FILE}`)} SECRET-FILE-END"`,
  `echo "SECRET-PAGE-BEGIN ${hexOf(`dd if=/dev/mem bs=${SEV_SECRET_PAGE_SIZE} skip=${SEV_SECRET_PAGE / SEV_SECRET_PAGE_SIZE} count=1`)} SECRET-PAGE-END"`,
  'poweroff -f',
].join('\n');

describe('sev: measured boot of the Debian kernel with ts-vmm boot --tee sev-sim @kvm', function () {
  this.timeout(BOOT_TIMEOUT_MS + 60_000);
  let guest: Guest;
  let work: string;

  before(async () => {
    guest = await guestAssets();
    work = await mkdtemp(join(tmpdir(), 'ts-vmm-sev-boot-'));
  });

  after(async () => {
    await guest?.dispose();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** `ts-vmm boot` of the guest through the measured path on sev-sim, with the owner's side given by `owner`. */
  const measuredBoot = (initrd: string, simState: string, owner: string[]) =>
    tsVmmBoot(
      ['--kernel', guest.kernel, '--initrd', initrd, '--cmdline', CMDLINE, '--mem', String(MEMORY_MIB), '--tee', 'sev-sim', '--sim-state', simState, ...owner],
      BOOT_TIMEOUT_MS,
    );

  it("boots through the measured path; the prediction matches; the guest reads the owner's secret from its initrd slot, and the page is cleared", async () => {
    const initrd = await guest.initrd('secret-reader', READ_SECRET);
    const stateDir = join(work, 'sev-sim');
    const exchange = join(work, 'exchange');
    // The platform's identity exists before the launch, so the owner can pin its PDH (2048-bit CAs keep
    // key generation short under TCG).
    const platform = new SimulatedPlatform(SimulatedIdentity.loadOrCreate(stateDir, { caBits: 2048 }));
    const policy = PolicyBit.NODBG | PolicyBit.NOKS;
    const owner = createSession(platform.pdhCertExport().pdh, policy);
    const files = sessionFileNames(work);
    writeSessionFiles(files, owner);

    const inputs = { kernel: await readFile(guest.kernel), initrd: await readFile(initrd), cmdline: CMDLINE, cpus: 1, memoryMiB: MEMORY_MIB, virtioDevices: 0 };
    const predicted = await predictTsVmmLaunchDigest(inputs);
    const secretTable = buildSecretTable([{ guid: SECRET_GUID, data: Buffer.from('correct horse battery staple') }]);

    const booted = measuredBoot(initrd, stateDir, [
      '--tee-policy',
      `0x${policy.toString(16)}`,
      '--tee-godh',
      files.godh,
      '--tee-session',
      files.session,
      '--tee-secret-dir',
      exchange,
      '--tee-secret-timeout',
      '120',
    ]);

    // The owner's side: wait for the measurement, verify it against the prediction, answer with the secret.
    const measurementFile = join(exchange, 'measurement.bin');
    const deadline = Date.now() + BOOT_TIMEOUT_MS;
    while (!existsSync(measurementFile) && Date.now() < deadline) await sleep(100);
    const published = await readFile(measurementFile);
    const measurement = parseMeasurement(published);
    expect(
      verifyMeasurement(measurement, owner.keys.tik, platform.build, policy, predicted),
      'the launch measurement verifies against the prediction',
    ).to.equal(true);
    writeSecretPacket(
      join(exchange, 'secret_header.bin'),
      join(exchange, 'secret_payload.bin'),
      buildSecretPacket(owner.keys, measurement.measure, secretTable),
    );

    const r = await booted;
    expect(r.status, r.stderr).to.equal(ExitStatus.guestStopped);
    expect(r.stderr).to.contain(`sev-sim launch measurement ${published.toString('base64')}`);
    expect(r.stderr).to.contain('sev-sim secret injected');
    const file = /SECRET-FILE-BEGIN ([0-9a-f]*) SECRET-FILE-END/.exec(r.stdout);
    const page = /SECRET-PAGE-BEGIN ([0-9a-f]*) SECRET-PAGE-END/.exec(r.stdout);
    expect(file && page, r.stdout).to.not.equal(null);
    const expected = Buffer.alloc(SEV_SECRET_PAGE_SIZE);
    secretTable.copy(expected);
    expect(file![1], 'the slot holds the secret page').to.equal(expected.toString('hex'));
    expect(page![1], 'the firmware cleared the page').to.equal(Buffer.alloc(SEV_SECRET_PAGE_SIZE).toString('hex'));
  });

  it('takes the session and the secret from a key broker, which releases it for the expected launch only', async () => {
    const kbs = await startTestKbs(SimulatedIdentity.generate({ caBits: 2048 }));
    try {
      const initrd = await guest.initrd('secret-reader', READ_SECRET);
      const policy = PolicyBit.NODBG | PolicyBit.NOKS;
      const inputs = {
        kernel: await readFile(guest.kernel),
        initrd: await readFile(initrd),
        cmdline: CMDLINE,
        cpus: 1,
        memoryMiB: MEMORY_MIB,
        virtioDevices: 0,
      };
      const passphrase = 'correct horse battery staple';
      await kbs.client.register(ADMIN_TOKEN, { workloadId: 'expected', launchDigest: await predictTsVmmLaunchDigest(inputs), policy, passphrase });
      await kbs.client.register(ADMIN_TOKEN, {
        workloadId: 'other-cmdline',
        launchDigest: await predictTsVmmLaunchDigest({ ...inputs, cmdline: `${CMDLINE} x` }),
        policy,
        passphrase,
      });
      const boot = (workloadId: string) => measuredBoot(initrd, join(kbs.dir, 'sim'), ['--tee-kbs', kbs.url, '--tee-workload-id', workloadId]);

      const refused = await boot('other-cmdline');
      expect(refused.status, refused.stderr).to.equal(1);
      expect(refused.stderr).to.contain('kbs attest: HTTP 403 measurement-mismatch');
      expect(refused.stdout, 'the guest never ran').not.to.contain('SECRET-FILE');
      expect(kbs.auditLines().some((l) => l.workload === 'other-cmdline' && l.verdict === 'refused' && l.reason === 'measurement-mismatch')).to.equal(true);

      const r = await boot('expected');
      expect(r.status, r.stderr).to.equal(ExitStatus.guestStopped);
      expect(r.stderr).to.contain('sev-sim secret injected');
      const file = /SECRET-FILE-BEGIN ([0-9a-f]*) SECRET-FILE-END/.exec(r.stdout);
      expect(file, r.stdout).to.not.equal(null);
      const expected = Buffer.alloc(SEV_SECRET_PAGE_SIZE);
      expected.write(passphrase);
      expect(file![1], 'the slot holds the passphrase the broker released').to.equal(expected.toString('hex'));
    } finally {
      await kbs.close();
    }
  });

  it('one byte changed in the initrd or the command line changes the prediction', async () => {
    const initrd = await readFile(await guest.initrd('secret-reader', READ_SECRET));
    const inputs = { kernel: await readFile(guest.kernel), initrd, cmdline: CMDLINE, cpus: 1, memoryMiB: MEMORY_MIB, virtioDevices: 0 };
    const predicted = await predictTsVmmLaunchDigest(inputs);
    const flipped = Buffer.from(initrd);
    const middle = flipped.length >> 1;
    flipped[middle] = flipped[middle]! ^ 0x01;
    expect(await predictTsVmmLaunchDigest({ ...inputs, initrd: flipped })).to.not.deep.equal(predicted);
    expect(await predictTsVmmLaunchDigest({ ...inputs, cmdline: 'console=ttyS0 quieu' })).to.not.deep.equal(predicted);
    expect(await predictTsVmmLaunchDigest(inputs)).to.deep.equal(predicted);
  });
});
