import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, readSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AssetError, COMPLETE_MARKER, ensureBusybox, ensureDebianKernel, ensurePackage } from '../../src/assets/debian.js';
import { probeKvm } from '../../src/kvm/probe.js';
import { errorMessage } from '../../src/sys/error-message.js';

const quiet = (): void => {};

/** Runs `action` with no programs on PATH, proving it does not call apt-get or dpkg. */
async function withoutPrograms<T>(action: () => Promise<T>): Promise<T> {
  const saved = process.env.PATH;
  process.env.PATH = mkdtempSync(join(tmpdir(), 'empty-path-'));
  try {
    return await action();
  } finally {
    process.env.PATH = saved;
  }
}

function fakeKernel(cache: string, pkg: string, release: string, complete = true): void {
  const root = join(cache, 'unpacked', pkg);
  mkdirSync(join(root, 'boot'), { recursive: true });
  mkdirSync(join(root, 'lib', 'modules', release, 'kernel'), { recursive: true });
  writeFileSync(join(root, 'boot', `vmlinuz-${release}`), 'kernel');
  if (complete) writeFileSync(join(root, COMPLETE_MARKER), '6.1.1-1\n');
}

async function expectReject(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await promise;
  } catch (e) {
    expect(e).to.be.instanceOf(AssetError);
    expect(errorMessage(e)).to.match(pattern);
    return;
  }
  expect.fail(`expected a rejection matching ${pattern}`);
}

describe('assets: Debian package cache', () => {
  let cache: string;
  beforeEach(() => {
    cache = mkdtempSync(join(tmpdir(), 'assets-test-'));
  });
  afterEach(() => rmSync(cache, { recursive: true, force: true }));

  it('reuses a completely unpacked package without calling apt', async () => {
    mkdirSync(join(cache, 'unpacked', 'busybox-static', 'bin'), { recursive: true });
    writeFileSync(join(cache, 'unpacked', 'busybox-static', COMPLETE_MARKER), '1:1.35.0-4\n');
    writeFileSync(join(cache, 'unpacked', 'busybox-static', 'bin', 'busybox'), '');
    const busybox = await withoutPrograms(() => ensureBusybox({ cacheDir: cache, log: quiet }));
    expect(busybox.package).to.deep.equal({ name: 'busybox-static', version: '1:1.35.0-4', root: join(cache, 'unpacked', 'busybox-static') });
    expect(busybox.path).to.equal(join(cache, 'unpacked', 'busybox-static', 'bin', 'busybox'));
  });

  it('picks the newest cached kernel offline and ignores a half-unpacked one', async () => {
    fakeKernel(cache, 'linux-image-6.1.0-9-amd64', '6.1.0-9-amd64');
    fakeKernel(cache, 'linux-image-6.1.0-56-amd64', '6.1.0-56-amd64');
    fakeKernel(cache, 'linux-image-6.1.0-60-amd64', '6.1.0-60-amd64', false);
    const kernel = await withoutPrograms(() => ensureDebianKernel({ cacheDir: cache, log: quiet }));
    expect(kernel.release).to.equal('6.1.0-56-amd64');
    expect(kernel.vmlinuz).to.equal(join(cache, 'unpacked', 'linux-image-6.1.0-56-amd64', 'boot', 'vmlinuz-6.1.0-56-amd64'));
    expect(kernel.modulesDir).to.equal(join(cache, 'unpacked', 'linux-image-6.1.0-56-amd64', 'lib', 'modules', '6.1.0-56-amd64'));
  });

  it('explains what is missing: apt on a bare system, a kernel image, a valid package name', async () => {
    await expectReject(
      withoutPrograms(() => ensurePackage('busybox-static', { cacheDir: cache, log: quiet })),
      /apt-get not found: .*TS_VMM_CACHE/,
    );
    mkdirSync(join(cache, 'unpacked', 'linux-image-6.1.0-1-amd64'), { recursive: true });
    writeFileSync(join(cache, 'unpacked', 'linux-image-6.1.0-1-amd64', COMPLETE_MARKER), '1\n');
    await expectReject(ensureDebianKernel({ cacheDir: cache, log: quiet }), /no boot\/vmlinuz-<release>/);
    await expectReject(ensurePackage('../etc', { cacheDir: cache }), /not a Debian package name/);
  });

  it('fetches the stock kernel and busybox-static with apt into the default cache', async function () {
    this.timeout(600_000);
    const kernel = await ensureDebianKernel();
    expect(kernel.release).to.match(/^\d+\.\d+\.\d+-\d+-amd64$/);
    // A bzImage carries the boot protocol signature "HdrS" at offset 0x202.
    const magic = Buffer.alloc(4);
    const fd = openSync(kernel.vmlinuz, 'r');
    readSync(fd, magic, 0, 4, 0x202);
    closeSync(fd);
    expect(magic.toString('latin1')).to.equal('HdrS');
    const busybox = await ensureBusybox();
    expect(execFileSync(busybox.path, ['echo', 'static']).toString()).to.equal('static\n');
  });
});

describe('lab: /dev/kvm probe', () => {
  it('says why KVM is unusable: a missing device, a device that is not KVM', () => {
    const missing = probeKvm('/nonexistent/kvm');
    expect(missing.available).to.equal(false);
    expect(missing.reason).to.match(/ENOENT/);
    const notKvm = probeKvm('/dev/null');
    expect(notKvm.available).to.equal(false);
    expect(notKvm.reason).to.match(/KVM_GET_API_VERSION failed: ENOTTY/);
  });
});
