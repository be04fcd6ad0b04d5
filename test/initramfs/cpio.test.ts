import { expect } from 'chai';
import { expectReject } from '../expect-reject.js';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync, mkdirSync, symlinkSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { CpioError, CpioWriter, normalizeArchivePath } from '../../src/initramfs/cpio.js';
import { writeInitramfs } from '../../src/initramfs/builder.js';
import { SECRET_SLOT_FILE, withSecretSlot } from '../../src/initramfs/secret-slot.js';

/** Collects what a CpioWriter writes, in memory. */
class Collector extends Writable {
  readonly chunks: Buffer[] = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.chunks.push(chunk);
    callback();
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

async function archive(build: (cpio: CpioWriter) => Promise<void>): Promise<Buffer> {
  const out = new Collector();
  const cpio = new CpioWriter(out);
  await build(cpio);
  await cpio.finish();
  return out.bytes();
}

/** `cpio -itvn` listing (numeric owners): one line per entry, as GNU cpio prints it. */
const listVerbose = (data: Buffer): string[] => execFileSync('cpio', ['-itvn', '--quiet'], { input: data }).toString().trim().split('\n');

describe('initramfs: cpio newc writer', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cpio-test-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes what GNU cpio lists: directories, files, symlinks, device nodes, fifos, modes and owners', async () => {
    const data = await archive(async (cpio) => {
      await cpio.directory('etc', { mode: 0o750 });
      await cpio.file('etc/motd', Buffer.from('hello\n'), { mode: 0o640, uid: 1000, gid: 100, mtime: 86400 * 365 });
      await cpio.symlink('bin', 'usr/bin');
      await cpio.device('console', 'char', 5, 1, { mode: 0o600 });
      await cpio.device('vda', 'block', 254, 0, { mode: 0o660 });
      await cpio.fifo('pipe');
    });
    const lines = listVerbose(data);
    expect(lines).to.have.length(6);
    expect(lines[0]).to.match(/^drwxr-x--- +2 0 +0 +0 .* etc$/);
    expect(lines[1]).to.match(/^-rw-r----- +1 1000 +100 +6 .*1971 etc\/motd$/);
    expect(lines[2]).to.match(/^lrwxrwxrwx .* bin -> usr\/bin$/);
    expect(lines[3]).to.match(/^crw------- +1 0 +0 +5, +1 .* console$/);
    expect(lines[4]).to.match(/^brw-rw---- +1 0 +0 +254, +0 .* vda$/);
    expect(lines[5]).to.match(/^prw-r--r-- .* pipe$/);
  });

  it('aligns every header and every file body to 4 bytes and ends with the trailer', async () => {
    const data = await archive(async (cpio) => {
      await cpio.file('a', Buffer.from('x'));
      await cpio.file('bcdef', Buffer.from('yyyyy'));
    });
    expect(data.length % 4).to.equal(0);
    let at = 0;
    const names: string[] = [];
    while (at < data.length) {
      const header = data.subarray(at, at + 110).toString('latin1');
      expect(header.slice(0, 6)).to.equal('070701');
      const size = parseInt(header.slice(54, 62), 16);
      const nameSize = parseInt(header.slice(94, 102), 16);
      names.push(data.subarray(at + 110, at + 110 + nameSize - 1).toString());
      at += Math.ceil((110 + nameSize) / 4) * 4 + Math.ceil(size / 4) * 4;
    }
    expect(at).to.equal(data.length);
    expect(names).to.deep.equal(['a', 'bcdef', 'TRAILER!!!']);
  });

  it('round-trips arbitrary file names, contents and modes through cpio -i', async () => {
    const name = fc.stringMatching(/^[A-Za-z0-9_.-]{1,40}$/).filter((n) => n !== '.' && n !== '..');
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.record({ name, content: fc.uint8Array({ maxLength: 3000 }), mode: fc.integer({ min: 0o400, max: 0o777 }) }), {
          selector: (f) => f.name,
          minLength: 1,
          maxLength: 8,
        }),
        async (files) => {
          const out = mkdtempSync(join(dir, 'x-'));
          const data = await archive(async (cpio) => {
            await cpio.directory('d');
            for (const f of files) await cpio.file(`d/${f.name}`, f.content, { mode: f.mode });
          });
          execFileSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames'], { input: data, cwd: out });
          for (const f of files) {
            const path = join(out, 'd', f.name);
            expect(readFileSync(path).equals(Buffer.from(f.content))).to.equal(true);
            expect(statSync(path).mode & 0o777).to.equal(f.mode);
          }
        },
      ),
      { numRuns: 25 },
    );
  });

  it('refuses paths with .., empty paths, duplicates, mode bits beyond permissions and use after finish', async () => {
    expect(() => normalizeArchivePath('a/../b')).to.throw(CpioError, /contains '\.\.'/);
    expect(() => normalizeArchivePath('/./')).to.throw(CpioError, /names no file/);
    expect(normalizeArchivePath('/usr//bin/./x')).to.equal('usr/bin/x');
    const cpio = new CpioWriter(new Collector());
    await cpio.file('x', Buffer.from('1'));
    await expectReject(cpio.file('/x', Buffer.from('2')), /added twice/);
    await expectReject(cpio.file('y', Buffer.alloc(0), { mode: 0o100644 }), /bits beyond the permissions/);
    await expectReject(cpio.symlink('z', ''), /empty target/);
    await expectReject(cpio.file('w', Buffer.alloc(0), { uid: -1 }), /uid -1 does not fit/);
    await cpio.finish();
    await expectReject(cpio.directory('late'), /already finished/);
  });

  it('builds a gzip initramfs from a host tree, creating parents first and keeping symlinks and modes', async () => {
    const tree = join(dir, 'tree');
    mkdirSync(join(tree, 'sub', 'deeper'), { recursive: true });
    writeFileSync(join(tree, 'sub', 'deeper', 'tool'), '#!/bin/sh\n');
    chmodSync(join(tree, 'sub', 'deeper', 'tool'), 0o755);
    writeFileSync(join(tree, 'skipped'), 'no');
    symlinkSync('sub/deeper/tool', join(tree, 'link'));
    const path = join(dir, 'initramfs.cpio.gz');
    const size = await writeInitramfs(path, 'gzip', async (image) => {
      await image.file('opt/app/config', 'k=v\n');
      await image.hostTree(tree, 'root', (rel) => rel !== 'skipped');
      await image.mkdirp('opt/app');
    });
    expect(size).to.equal(statSync(path).size);
    const listing = execFileSync('cpio', ['-t', '--quiet'], { input: gunzipSync(readFileSync(path)) })
      .toString()
      .trim()
      .split('\n');
    expect(listing).to.deep.equal(['opt', 'opt/app', 'opt/app/config', 'root', 'root/link', 'root/sub', 'root/sub/deeper', 'root/sub/deeper/tool']);
    const out = join(dir, 'out');
    mkdirSync(out);
    execFileSync('cpio', ['-idm', '--quiet'], { input: gunzipSync(readFileSync(path)), cwd: out });
    expect(readlinkSync(join(out, 'root', 'link'))).to.equal('sub/deeper/tool');
    expect(statSync(join(out, 'root', 'sub', 'deeper', 'tool')).mode & 0o777).to.equal(0o755);
  });

  it('refuses to place a file beneath a path it added as a symlink', async () => {
    const path = join(dir, 'bad.cpio');
    await expectReject(
      writeInitramfs(path, 'none', async (image) => {
        await image.symlink('lib', 'usr/lib');
        await image.file('lib/x.so', 'elf');
      }),
      /lib is a symlink in this archive/,
    );
  });
});

describe('initramfs: the launch secret slot', () => {
  it('appends an archive cpio(1) reads, whose one file is the slot at the offset it reports', async () => {
    for (const length of [0, 1, 7, 4096]) {
      const initrd = new Uint8Array(length).fill(0x11);
      const { initrd: slotted, slotOffset } = await withSecretSlot(initrd, 4096);
      expect(slotted.subarray(0, length)).to.deep.equal(initrd);
      const archiveStart = Math.ceil(length / 4) * 4;
      expect(
        slotted.subarray(length, archiveStart).every((b) => b === 0),
        'zero padding to 4 bytes',
      ).to.equal(true);
      // What the firmware does: the secret goes into the slot, in place.
      slotted.fill(0xa5, slotOffset, slotOffset + 4096);
      const dir = mkdtempSync(join(tmpdir(), 'ts-vmm-slot-'));
      try {
        execFileSync('cpio', ['-i', '--quiet', '--no-absolute-filenames'], { cwd: dir, input: slotted.subarray(archiveStart) });
        const file = join(dir, SECRET_SLOT_FILE);
        expect(readFileSync(file).equals(Buffer.alloc(4096, 0xa5)), `initrd of ${length} bytes`).to.equal(true);
        expect(statSync(file).mode & 0o777).to.equal(0o400);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });
});
