// `ts-vmm luks dump`: LUKS1 and LUKS2 headers shown without secrets; a bad image is one line and exit status 1.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { writeLuks2 } from '../../src/luks/writer.js';
import { runInProcess } from '../cli/in-process.js';
import { FAST_PBKDF2, Scratch, cryptsetupOk } from './cryptsetup.js';

const run = runInProcess;

describe('luks: ts-vmm luks dump', function () {
  this.timeout(60_000);
  let scratch: Scratch;
  const passphrase = Buffer.from('dump passphrase');
  before(() => {
    scratch = new Scratch();
  });
  after(() => scratch.dispose());

  it("shows a LUKS2 image's header, keyslot and segment, and no secret", async () => {
    const image = scratch.file('l2.img');
    const volumeKey = randomBytes(64);
    const { uuid } = await writeLuks2({
      output: image,
      source: Readable.from([Buffer.alloc(4096)]),
      passphrase,
      kdf: { type: 'argon2id', time: 4, memoryKiB: 1024, cpus: 1 },
      volumeKey,
    });
    const { status, out } = await run('luks', 'dump', image);
    expect(status).to.equal(0);
    expect(out).to.include('LUKS2 header').and.include(`uuid:           ${uuid}`);
    expect(out).to.match(/0: luks2, 512-bit key, argon2id time 4, memory 1024 KiB, cpus 1, af 4000 stripes sha256, area 32768\+258048 aes-xts-plain64/);
    expect(out).to.match(/0: crypt, offset 16777216, size dynamic \(4096 bytes\), aes-xts-plain64, sector 4096/);
    expect(out).to.include('header copy at 0: ok').and.include('header copy at 16384: ok');
    expect(out).not.to.include(passphrase.toString()).and.not.include(volumeKey.toString('hex').slice(0, 16));
  });

  it('shows a detached header alone, and with its data file', async () => {
    const header = scratch.file('detached.hdr');
    const data = scratch.file('detached.data');
    await writeLuks2({ output: data, header, source: Readable.from([Buffer.alloc(8192)]), passphrase, kdf: { type: 'pbkdf2', iterations: 1000 } });
    const alone = await run('luks', 'dump', header);
    expect(alone.status).to.equal(0);
    expect(alone.out).to.include('0: crypt, offset 0, size dynamic (unusable: the header is detached (data offset 0): open the data file with this header)');
    const both = await run('luks', 'dump', data, '--header', header);
    expect(both.status).to.equal(0);
    expect(both.out).to.include('0: crypt, offset 0, size dynamic (8192 bytes)');
  });

  it('shows a LUKS1 image made by cryptsetup', async () => {
    const image = scratch.file('l1.img');
    writeFileSync(image, Buffer.alloc(4 * 1024 * 1024));
    cryptsetupOk('luksFormat', '-q', '--type', 'luks1', ...FAST_PBKDF2.slice(2), '--key-file', scratch.keyFile(passphrase), image);
    const { status, out } = await run('luks', 'dump', image);
    expect(status).to.equal(0);
    expect(out).to.include('LUKS1 header').and.include('cipher:         aes-xts-plain64, 512-bit key');
    expect(out)
      .to.match(/ {2}0: enabled, pbkdf2 sha256, 1000 iterations/)
      .and.match(/ {2}7: disabled/);
  });

  it('says what is wrong with a bad image in one line, exit status 1', async () => {
    const image = scratch.file('bad.img');
    writeFileSync(image, Buffer.alloc(64 * 1024));
    const { status, out, err } = await run('luks', 'dump', image);
    expect(status).to.equal(1);
    expect(out).to.equal('');
    expect(err).to.match(/^ts-vmm luks dump: no valid LUKS2 header copy \(no LUKS magic at offset 0\)\n$/);
  });
});
