// End to end on real KVM (in the lab where there is none) with sev-sim: `ts-vmm mkcw` makes an encrypted image,
// `ts-vmm run --tee sev-sim` boots it through the measured launch, the guest opens the disk with Debian's
// cryptsetup using the passphrase the owner released through LAUNCH_SECRET, and the workload's output and exit
// status come back. The owner is this host (--passphrase-file) or a key broker the image was registered with.
import { expect } from 'chai';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBusybox } from '../../src/assets/debian.js';
import { confidentialBootInputs, confidentialGuest } from '../../src/oci/confidential-run.js';
import { writeBusyboxRootfs } from '../../src/oci/example-rootfs.js';
import { predictTsVmmLaunchDigest } from '../../src/sev/ts-vmm-launch.js';
import { encodeFooter, FOOTER_READ_BYTES, decodeFooter } from '../../src/oci/workload-footer.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { type CliResult, runCli } from '../cli/cli-process.js';
import { writeBuildahImage } from './buildah-image.js';
import { ADMIN_TOKEN, startTestKbs, type TestKbs } from '../kbs/harness.js';

/** Only the passes a test needs: the guest runs cryptsetup under TCG. */
const FAST_KDF = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];
const MARKER = 'marker-a7c3e9f1-only-inside-the-encrypted-disk';

/** The primary LUKS2 header's JSON (after the 4 KiB binary header, up to its first NUL). */
async function luks2Json(image: string): Promise<{ segments: Record<string, { encryption: string; integrity?: { type: string } }> }> {
  const file = await open(image, 'r');
  try {
    const { buffer } = await file.read(Buffer.alloc(0x4000), 0, 0x4000, 0);
    return JSON.parse(buffer.subarray(0x1000, buffer.indexOf(0, 0x1000)).toString('utf8'));
  } finally {
    await file.close();
  }
}
describe('confidential workloads: ts-vmm mkcw, then ts-vmm run --tee sev-sim @kvm', function () {
  this.timeout(600_000);
  let dir: string;
  let bundle: string;
  let kbs: TestKbs | undefined;
  let env: NodeJS.ProcessEnv;

  /** Each command has at most five minutes: a TCG boot, cryptsetup in the guest, a build VM. */
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, env, 300_000);
  /** stderr without ts-vmm's progress lines (downloads, builds). */
  const said = (r: CliResult): string =>
    r.stderr
      .split('\n')
      .filter((l) => l !== '' && !/^ts-vmm: (building|compiling|downloading|unpacking)/.test(l))
      .join('\n');

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-cw-'));
    env = { ...process.env, TS_VMM_STATE: join(dir, 'state') };
    // 2048-bit CAs keep key generation short under TCG.
    SimulatedIdentity.generate({ caBits: 2048 }).save(join(dir, 'sim'));
    bundle = join(dir, 'bundle');
    mkdirSync(bundle);
    await writeBusyboxRootfs((await ensureBusybox()).path, join(bundle, 'rootfs'), { marker: { content: `${MARKER}\n`, mode: 0o644 } });
    writeFileSync(
      join(bundle, 'config.json'),
      JSON.stringify({
        ociVersion: '1.0.2',
        process: {
          cwd: '/',
          env: ['PATH=/bin', 'SECRET_ENV=only-in-the-image'],
          user: { uid: 0, gid: 0 },
          args: ['sh', '-c', 'cat /marker; echo "env $SECRET_ENV"; echo "to stderr" >&2; exit 3'],
        },
        root: { path: 'rootfs' },
        hostname: 'confidential',
        mounts: [{ destination: '/proc', type: 'proc', source: 'proc' }],
        annotations: { 'ts-vmm.cpus': '1', 'ts-vmm.memory-mib': '256' },
      }),
    );
  });
  // The lab's files live in its memory: each test's images and trees go when it ends.
  afterEach(() => {
    for (const name of readdirSync(dir)) {
      if (/\.img$/.test(name) || ['buildah-rootfs', 'buildah-bundle', 'pod'].includes(name)) rmSync(join(dir, name), { recursive: true, force: true });
    }
  });
  after(async () => {
    await kbs?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * A bundle whose rootfs carries `image` as /disk.img, as crun and Kubernetes hand a confidential image over, with
   * more files in the rootfs (0600) and the bundle's annotations.
   */
  const diskBundle = (name: string, image: string, annotations: Record<string, string>, rootfsFiles: Record<string, string> = {}): string => {
    const path = join(dir, name);
    mkdirSync(join(path, 'rootfs'), { recursive: true });
    copyFileSync(image, join(path, 'rootfs', 'disk.img'));
    for (const [file, content] of Object.entries(rootfsFiles)) writeFileSync(join(path, 'rootfs', file), content, { mode: 0o600 });
    const config = { ociVersion: '1.0.2', process: { cwd: '/', args: ['/entrypoint'] }, root: { path: 'rootfs' }, annotations };
    writeFileSync(join(path, 'config.json'), JSON.stringify(config));
    return path;
  };

  /** The run's leftovers: a lock beside the image, a run directory under the system's temporary directory. */
  const leftovers = (image: string): string[] => [
    ...(existsSync(`${image}.lock`) ? [`${image}.lock`] : []),
    ...readdirSync(tmpdir()).filter((f) => f.startsWith('ts-vmm-run-')),
  ];

  it('runs the workload (2 vCPUs) from the encrypted image with the passphrase this host releases after checking the measurement', async () => {
    const image = join(dir, 'local.img');
    const pass = join(dir, 'local.pass');
    const made = await cli('mkcw', bundle, image, '--passphrase-file', pass, '--cpus', '2', ...FAST_KDF);
    expect(made.status, made.stderr).to.equal(0);
    expect(made.stdout).to.match(/^workload-id [0-9a-f]{64}\nlaunch-digest [0-9a-f]{64}\n$/);
    expect(readFileSync(image).includes(MARKER), 'the image holds no plaintext of the rootfs').to.equal(false);

    const r = await cli('run', '--tee', 'sev-sim', '--sim-state', join(dir, 'sim'), '--passphrase-file', pass, image);
    expect(r.status, r.stderr).to.equal(3);
    expect(r.stdout).to.equal(`${MARKER}\nenv only-in-the-image\n`);
    expect(said(r)).to.equal('to stderr');
    expect(leftovers(image)).to.deep.equal([]);
  });

  it("runs an image laid out as buildah mkcw writes it (LUKS1, the OCI image configuration inside), from its file and as crun hands it over: the image's process, env, user and working directory", async () => {
    const broker = await startTestKbs(SimulatedIdentity.generate({ caBits: 2048 }));
    try {
      const rootfs = join(dir, 'buildah-rootfs');
      await writeBusyboxRootfs((await ensureBusybox()).path, rootfs, {
        marker: { content: `${MARKER}\n`, mode: 0o644 },
        'srv/.keep': { content: '', mode: 0o644 },
      });
      const image = join(dir, 'buildah.img');
      const passphrase = randomBytes(32).toString('hex');
      const pass = join(dir, 'buildah.pass');
      writeFileSync(pass, passphrase, { mode: 0o600 });
      const workload = {
        tee: 'sev' as const,
        tee_data: '{"vendor_chain":"/sev.chain","attestation_server_pubkey":""}',
        workload_id: 'buildah-1',
        cpus: 1,
        ram_mib: 256,
        attestation_url: broker.url,
      };
      await writeBuildahImage({
        rootfs,
        image,
        passphrase: Buffer.from(passphrase),
        imageConfig: {
          architecture: 'amd64',
          os: 'linux',
          config: {
            User: '1000:1000',
            Env: ['PATH=/bin', 'GREETING=hello'],
            Entrypoint: ['/bin/sh', '-c'],
            Cmd: ['echo "$GREETING from $(pwd) as $(id -u):$(id -g)"; test -c /dev/null && cat /marker; exit 5'],
            WorkingDir: '/srv',
          },
        },
        workload,
      });
      expect(readFileSync(image).includes(MARKER), 'the image holds no plaintext of the rootfs').to.equal(false);
      const expected = `hello from /srv as 1000:1000\n${MARKER}\n`;

      const r = await cli('run', '--tee', 'sev-sim', '--sim-state', join(dir, 'sim'), '--passphrase-file', pass, image);
      expect(r.status, r.stderr).to.equal(5);
      expect(r.stdout).to.equal(expected);
      expect(said(r)).to.equal('');
      expect(leftovers(image)).to.deep.equal([]);

      // As buildah mkcw registers it and crun runs it: the broker holds the passphrase for the expected launch; the
      // bundle's rootfs holds /krun-sev.json (which selects the confidential run) and /disk.img, whose footer names
      // the broker.
      const guest = await confidentialGuest({ log: () => undefined });
      const launchDigest = await predictTsVmmLaunchDigest(await confidentialBootInputs(guest.kernel.vmlinuz, guest.initrd, 1, 256));
      await broker.client.register(ADMIN_TOKEN, { workloadId: 'buildah-1', launchDigest, policy: 3, passphrase });
      const crunBundle = diskBundle(
        'buildah-bundle',
        image,
        { 'ts-vmm.tee': 'sev-sim', 'ts-vmm.sev-sim-state': join(broker.dir, 'sim') },
        { 'krun-sev.json': JSON.stringify(workload) },
      );
      const crun = await cli('run', crunBundle);
      expect(crun.status, crun.stderr).to.equal(5);
      expect(crun.stdout).to.equal(expected);
      expect(broker.auditLines().some((l) => l.workload === 'buildah-1' && l.step === 'key' && l.verdict === 'granted')).to.equal(true);
    } finally {
      await broker.close();
    }
  });

  it('a wrong passphrase: the guest cannot open the disk, exit status 125 with the cause in one line', async () => {
    const image = join(dir, 'wrong.img');
    const pass = join(dir, 'wrong.pass');
    expect((await cli('mkcw', bundle, image, '--passphrase-file', pass, ...FAST_KDF)).status).to.equal(0);
    const other = join(dir, 'other.pass');
    writeFileSync(other, 'not the passphrase', { mode: 0o600 });
    const r = await cli('run', '--tee', 'sev-sim', '--sim-state', join(dir, 'sim'), '--passphrase-file', other, image);
    expect(r.status).to.equal(125);
    expect(said(r)).to.equal('ts-vmm: the VM stopped before the guest agent started: cannot open the encrypted disk: No key available with this passphrase.');
    expect(r.stdout).to.equal('');
    expect(r.stderr).to.not.contain('not the passphrase');
    expect(leftovers(image)).to.deep.equal([]);
  });

  it('refuses a tampered LUKS header and an image without a secret source before booting, exit status 125', async () => {
    const image = join(dir, 'tampered.img');
    const pass = join(dir, 'tampered.pass');
    expect((await cli('mkcw', bundle, image, '--passphrase-file', pass, ...FAST_KDF)).status).to.equal(0);
    const noSource = await cli('run', '--tee', 'sev-sim', '--sim-state', join(dir, 'sim'), image);
    expect([noSource.status, said(noSource)]).to.deep.equal([
      125,
      `ts-vmm: ${image}: no way to the passphrase: give --passphrase-file FILE (this host is the owner) or --attestation-url URL (a key broker)`,
    ]);
    // LUKS2 keeps two header copies and falls back to the second when the first fails its checksum: damage both.
    const file = await open(image, 'r+');
    const secondary = Number((await file.read(Buffer.alloc(8), 0, 8, 8)).buffer.readBigUInt64BE(0));
    for (const at of [0x300, secondary + 0x300]) await file.write(Buffer.from([0x5a]), 0, 1, at);
    await file.close();
    const r = await cli('run', '--tee', 'sev-sim', '--sim-state', join(dir, 'sim'), '--passphrase-file', pass, image);
    expect(r.status).to.equal(125);
    expect(said(r)).to.match(new RegExp(`^ts-vmm: ${image}: .*checksum`));
  });

  // The header names the tag as the kernel's crypto API does: hmac(sha256), or aead for the cipher's own.
  for (const [integrity, cipher, tag] of [
    ['hmac-sha256', 'aes-xts-plain64', 'hmac(sha256)'],
    ['aead', 'aes-gcm-random', 'aead'],
  ] as const) {
    it(`an integrity image, ${integrity} (a build VM formats it): the workload runs; a ciphertext byte the host flips is an I/O error in the guest`, async () => {
      const integrityBundle = join(dir, `integrity-bundle-${integrity}`);
      mkdirSync(integrityBundle);
      await writeBusyboxRootfs((await ensureBusybox()).path, join(integrityBundle, 'rootfs'), { marker: { content: `${MARKER}\n`, mode: 0o644 } });
      writeFileSync(join(integrityBundle, 'rootfs', 'big'), randomBytes(24 * 1024 * 1024));
      writeFileSync(
        join(integrityBundle, 'config.json'),
        JSON.stringify({
          ociVersion: '1.0.2',
          process: { cwd: '/', env: ['PATH=/bin'], args: ['sh', '-c', 'cat /marker; cat /big > /dev/null; echo "big: $?"'] },
          root: { path: 'rootfs' },
          annotations: { 'ts-vmm.cpus': '1', 'ts-vmm.memory-mib': '256' },
        }),
      );
      const image = join(dir, `integrity-${integrity}.img`);
      const pass = join(dir, `integrity-${integrity}.pass`);
      const made = await cli('mkcw', integrityBundle, image, '--passphrase-file', pass, '--integrity', integrity, ...FAST_KDF);
      expect(made.status, made.stderr).to.equal(0);
      const segment = (await luks2Json(image)).segments['0'];
      expect([segment?.encryption, segment?.integrity?.type]).to.deep.equal([cipher, tag]);
      const sim = join(dir, 'sim');
      const r = await cli('run', '--tee', 'sev-sim', '--sim-state', sim, '--passphrase-file', pass, image);
      expect([r.status, r.stdout], r.stderr).to.deep.equal([0, `${MARKER}\nbig: 0\n`]);

      // The data segment starts after LUKS2's 16 MiB; dm-integrity's journal and tags take under 2% ahead of the
      // filesystem, whose middle lies inside /big (most of it). Two bytes there, one ciphertext bit each.
      const file = await open(image, 'r+');
      const { size } = await file.stat();
      const filesystem = (size - 24 * 1024 * 1024) / 1.03;
      for (const share of [0.45, 0.5]) {
        const at = Math.floor(16 * 1024 * 1024 + 0.016 * size + share * filesystem);
        const byte = (await file.read(Buffer.alloc(1), 0, 1, at)).buffer;
        byte[0] = byte[0]! ^ 0x01;
        await file.write(byte, 0, 1, at);
      }
      await file.close();
      const tampered = await cli('run', '--tee', 'sev-sim', '--sim-state', sim, '--passphrase-file', pass, image);
      expect([tampered.status, tampered.stdout], tampered.stderr).to.deep.equal([0, `${MARKER}\nbig: 1\n`]);
      expect(said(tampered)).to.contain('Input/output error');
    });
  }

  it('with a key broker: mkcw registers the image, run attests from the footer URL; a changed vCPU count is refused at attest', async () => {
    kbs = await startTestKbs(SimulatedIdentity.generate({ caBits: 2048 }));
    const token = join(dir, 'token');
    writeFileSync(token, ADMIN_TOKEN, { mode: 0o600 });
    const image = join(dir, 'kbs.img');
    const pass = join(dir, 'kbs.pass');
    const made = await cli(
      'mkcw',
      bundle,
      image,
      '--passphrase-file',
      pass,
      '--attestation-url',
      kbs.url,
      '--admin-token-file',
      token,
      '--workload-id',
      'cw-1',
      ...FAST_KDF,
    );
    expect(made.status, made.stderr).to.equal(0);
    expect(made.stdout).to.contain(`registered ${kbs.url}\n`);
    const sim = join(kbs.dir, 'sim');

    const r = await cli('run', '--tee', 'sev-sim', '--sim-state', sim, image);
    expect(r.status, r.stderr).to.equal(3);
    expect(r.stdout).to.equal(`${MARKER}\nenv only-in-the-image\n`);
    expect(kbs.auditLines().some((l) => l.workload === 'cw-1' && l.step === 'key' && l.verdict === 'granted')).to.equal(true);

    // As Kubernetes selects it: a bundle whose rootfs carries the image as /disk.img, with the pod's annotations.
    const podBundle = diskBundle('pod', image, {
      'run.oci.handler': 'krun-sev',
      'libkrun.attestation': kbs.url,
      'ts-vmm.tee': 'sev-sim',
      'ts-vmm.sev-sim-state': sim,
    });
    const pod = await cli('run', podBundle);
    expect(pod.status, pod.stderr).to.equal(3);
    expect(pod.stdout).to.equal(`${MARKER}\nenv only-in-the-image\n`);

    // The footer is outside the encryption: a host can change it, and the measurement then gives it away.
    const file = await open(image, 'r+');
    const { size } = await file.stat();
    const tail = Buffer.alloc(FOOTER_READ_BYTES);
    await file.read(tail, 0, tail.length, size - tail.length);
    const workload = decodeFooter(tail)!;
    const footer = encodeFooter({ ...workload, cpus: 2 }, 0);
    const old = encodeFooter(workload, 0);
    expect(footer.length).to.equal(old.length);
    await file.write(footer, 0, footer.length, size - footer.length);
    await file.close();
    const refused = await cli('run', '--tee', 'sev-sim', '--sim-state', sim, image);
    expect(refused.status).to.equal(125);
    expect(said(refused)).to.match(/^ts-vmm: the VM stopped before the guest agent started: kbs attest: HTTP 403 measurement-mismatch/);
    expect(refused.stdout).to.equal('');
    expect(kbs.auditLines().some((l) => l.workload === 'cw-1' && l.verdict === 'refused' && l.reason === 'measurement-mismatch')).to.equal(true);
    expect(leftovers(image)).to.deep.equal([]);
  });
});
