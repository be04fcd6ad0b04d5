// `ts-vmm mkcw` as a user runs it: the image is LUKS2 that cryptsetup accepts, holds the rootfs and the
// bundle's config only encrypted, ends with buildah mkcw's footer, and the passphrase file is the user's.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LuksImage } from '../../src/luks/image.js';
import { IMAGE_FILES } from '../../src/oci/confidential-initramfs.js';
import { encodeWords } from '../../src/oci/agent-protocol.js';
import { processWords } from '../../src/oci/guest-init.js';
import { readBundleConfig } from '../../src/oci/bundle-config.js';
import { decodeFooter, encodeFooter, FOOTER_READ_BYTES, WorkloadFooterError, type WorkloadConfig } from '../../src/oci/workload-footer.js';
import { projectFile } from '../../src/sys/project-paths.js';
import { runCli } from '../cli/cli-process.js';
import { startTestKbs } from '../kbs/harness.js';

const exec = promisify(execFile);
const MARKER = 'MARKER-PLAINTEXT-7f3a';
const SECRET_ENV = 'SECRET-ENV-9c1d';
const FAST_KDF = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];

describe('confidential workload images: ts-vmm mkcw', function () {
  this.timeout(120_000);
  let dir: string;
  let bundle: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-mkcw-'));
    bundle = join(dir, 'bundle');
    cpSync(projectFile('examples', 'hello'), bundle, { recursive: true });
    mkdirSync(join(bundle, 'rootfs', 'bin'), { recursive: true });
    writeFileSync(join(bundle, 'rootfs', 'bin', 'hello'), '#!/bin/sh\necho hello\n', { mode: 0o755 });
    writeFileSync(join(bundle, 'rootfs', 'marker'), `${MARKER}\n`);
    const config = readFileSync(join(bundle, 'config.json'), 'utf8').replace('hello from config.json', SECRET_ENV);
    writeFileSync(join(bundle, 'config.json'), config);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a 0600 LUKS2 image that cryptsetup opens with the new 0600 passphrase file, and refuses another passphrase', async () => {
    const image = join(dir, 'a.img');
    const pass = join(dir, 'a.pass');
    const r = await runCli(
      ['mkcw', bundle, image, '--passphrase-file', pass, ...FAST_KDF, '--workload-id', 'hello-a', '--cpus', '2', '--mem', '384'],
      process.env,
      60_000,
    );
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^workload-id hello-a\nlaunch-digest [0-9a-f]{64}\n$/);
    expect(r.stderr, 'stderr is a pipe here: no progress line').to.not.contain('Progress');
    expect(statSync(image).mode & 0o777).to.equal(0o600);
    expect(statSync(pass).mode & 0o777).to.equal(0o600);
    expect(readFileSync(pass, 'utf8')).to.match(/^[0-9a-f]{64}$/);
    expect(r.stdout + r.stderr).not.to.contain(readFileSync(pass, 'utf8'));
    await exec('cryptsetup', ['isLuks', '--type', 'luks2', image]);
    await exec('cryptsetup', ['open', '--test-passphrase', '--key-file', pass, image]);
    writeFileSync(join(dir, 'wrong'), 'not the passphrase');
    await exec('cryptsetup', ['open', '--test-passphrase', '--key-file', join(dir, 'wrong'), image]).then(
      () => expect.fail('a wrong passphrase opened the image'),
      () => undefined,
    );

    const bytes = readFileSync(image);
    expect(bytes.length % 4096).to.equal(0);
    expect(decodeFooter(bytes.subarray(-FOOTER_READ_BYTES))).to.deep.equal({
      tee: 'sev',
      tee_data: '',
      workload_id: 'hello-a',
      cpus: 2,
      ram_mib: 384,
      attestation_url: '',
    });
    expect(bytes.includes(MARKER), 'the rootfs is not in the clear').to.equal(false);
    expect(bytes.includes(SECRET_ENV), 'the config is not in the clear').to.equal(false);
    expect(readdirSync(dir).sort(), 'nothing left beside the image').to.deep.equal(['a.img', 'a.pass', 'bundle', 'wrong']);
  });

  it('holds the rootfs and the bundle config byte for byte inside the encrypted ext4; an existing passphrase file is used as is', async () => {
    const image = join(dir, 'b.img');
    const pass = join(dir, 'b.pass');
    writeFileSync(pass, 'a passphrase the user chose\n', { mode: 0o600 });
    const r = await runCli(['mkcw', bundle, image, '--passphrase-file', pass, ...FAST_KDF], process.env, 60_000);
    expect(r.status, r.stderr).to.equal(0);
    expect(readFileSync(pass, 'utf8')).to.equal('a passphrase the user chose\n');
    const luks = await LuksImage.open(image);
    const volume = await luks.unlock(readFileSync(pass));
    const ext4 = join(dir, 'b.ext4');
    const out = await open(ext4, 'w');
    const chunk = 1024;
    for (let sector = 0; sector < volume.size / volume.sectorSize; sector += chunk) {
      await out.write(await volume.readSectors(sector, Math.min(chunk, volume.size / volume.sectorSize - sector)));
    }
    await out.close();
    await luks.close();
    expect(readFileSync(ext4).includes(MARKER), 'the control: the plaintext holds the marker').to.equal(true);
    const cat = async (path: string) => (await exec('debugfs', ['-R', `cat ${path}`, ext4])).stdout;
    expect(await cat('/marker')).to.equal(`${MARKER}\n`);
    expect(await cat(IMAGE_FILES.config)).to.equal(readFileSync(join(bundle, 'config.json'), 'utf8'));
    const processFile = (await exec('debugfs', ['-R', `cat ${IMAGE_FILES.process}`, ext4], { encoding: 'buffer' })).stdout;
    expect(processFile, "the agent's process words").to.deep.equal(encodeWords(processWords(readBundleConfig(bundle).process)));
    expect((await cat(IMAGE_FILES.setup)).split('\0')).to.include('--mount');
    for (const file of [IMAGE_FILES.config, IMAGE_FILES.setup, IMAGE_FILES.process]) {
      expect((await exec('debugfs', ['-R', `stat ${file}`, ext4])).stdout, file).to.match(/Mode:\s+0600/);
    }
  });

  it('prints the launch digest of the image: the same for the same launch, another for other vCPUs or memory', async () => {
    const digest = async (name: string, ...args: string[]): Promise<string> => {
      const r = await runCli(
        ['mkcw', bundle, join(dir, `${name}.img`), '--passphrase-file', join(dir, `${name}.pass`), ...FAST_KDF, ...args],
        process.env,
        60_000,
      );
      expect(r.status, r.stderr).to.equal(0);
      return /^launch-digest ([0-9a-f]{64})$/m.exec(r.stdout)![1]!;
    };
    const base = await digest('d1', '--cpus', '1', '--mem', '256');
    expect(await digest('d2', '--cpus', '1', '--mem', '256'), 'the initramfs is rebuilt byte for byte').to.equal(base);
    const others = [await digest('d3', '--cpus', '2', '--mem', '256'), await digest('d4', '--cpus', '1', '--mem', '320')];
    expect(new Set([base, ...others]).size).to.equal(3);
  });

  it('refuses a bad bundle in one line, exit status 1, and leaves no image and no passphrase file', async () => {
    const image = join(dir, 'c.img');
    const pass = join(dir, 'c.pass');
    const r = await runCli(['mkcw', join(dir, 'no-such-bundle'), image, '--passphrase-file', pass, ...FAST_KDF], process.env, 60_000);
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/^ts-vmm: .*no-such-bundle\/config\.json: no such file \(is this an OCI bundle directory\?\)\n$/);
    expect(() => statSync(image)).to.throw();
    expect(() => statSync(pass)).to.throw();
  });

  it('a key broker that refuses the registration leaves no image and no passphrase file (status 1, one line)', async () => {
    const kbs = await startTestKbs();
    try {
      const token = join(dir, 'wrong-token');
      writeFileSync(token, 'not-the-admin-token', { mode: 0o600 });
      const before = readdirSync(dir).sort();
      const r = await runCli(
        ['mkcw', bundle, join(dir, 'k.img'), '--passphrase-file', join(dir, 'k.pass'), '--attestation-url', kbs.url, '--admin-token-file', token, ...FAST_KDF],
        process.env,
        60_000,
      );
      expect(r.status).to.equal(1);
      expect(r.stderr).to.match(/^ts-vmm: .*HTTP 401.*\n$/);
      expect(r.stdout).to.equal('');
      expect(readdirSync(dir).sort()).to.deep.equal(before);
    } finally {
      await kbs.close();
    }
  });

  it('footer: round-trips, aligns the image to 4 KiB, and refuses a damaged one by name', () => {
    const config: WorkloadConfig = { tee: 'sev', tee_data: '', workload_id: 'w', cpus: 1, ram_mib: 256, attestation_url: 'http://kbs:8000' };
    for (const length of [0, 1, 4095, 4096, 123_457]) {
      const footer = encodeFooter(config, length);
      expect((length + footer.length) % 4096).to.equal(0);
      expect(decodeFooter(Buffer.concat([Buffer.alloc(length), footer]))).to.deep.equal(config);
    }
    expect(decodeFooter(Buffer.alloc(4096)), 'no footer').to.equal(undefined);
    const footer = encodeFooter(config, 0);
    const huge = Buffer.from(footer);
    huge.writeBigUInt64LE(1n << 40n, huge.length - 8);
    expect(() => decodeFooter(huge)).to.throw(WorkloadFooterError, /above the 65536 allowed/);
    const wrongCpus = encodeFooter({ ...config, cpus: 0 }, 0);
    expect(() => decodeFooter(wrongCpus)).to.throw(WorkloadFooterError, /\/cpus must be >= 1/);
  });
});
