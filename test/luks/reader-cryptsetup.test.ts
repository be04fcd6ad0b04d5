// Images made by real cryptsetup (luksFormat, reencrypt --encrypt, convert to LUKS1) opened by the reader: the
// passphrase unlocks them, a wrong one is refused, and the data decrypts to what cryptsetup encrypted.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { LuksPassphraseError } from '../../src/luks/errors.js';
import { LuksImage } from '../../src/luks/image.js';
import { FAST_ARGON2ID, FAST_PBKDF2, Scratch, cryptsetupOk } from './cryptsetup.js';

async function readAll(path: string, passphrase: Buffer, header?: string): Promise<Buffer> {
  const image = await LuksImage.open(path, { header });
  try {
    const volume = await image.unlock(passphrase);
    return await volume.readSectors(0, volume.size / volume.sectorSize);
  } finally {
    await image.close();
  }
}

async function expectRefused(path: string, passphrase: Buffer, header?: string): Promise<void> {
  const image = await LuksImage.open(path, { header });
  try {
    await image.unlock(passphrase).then(
      () => expect.fail('a wrong passphrase unlocked the image'),
      (e: unknown) => expect(e).to.be.instanceOf(LuksPassphraseError),
    );
  } finally {
    await image.close();
  }
}

describe('luks: reader on images made by cryptsetup', function () {
  this.timeout(120_000);
  let scratch: Scratch;
  const passphrase = Buffer.from('correct horse battery staple');
  const wrong = Buffer.from('correct horse battery stapler');
  before(() => {
    scratch = new Scratch();
  });
  after(() => scratch.dispose());

  for (const [kdfName, kdf] of [
    ['pbkdf2', FAST_PBKDF2],
    ['argon2id', FAST_ARGON2ID],
  ] as const) {
    for (const sectorSize of [512, 4096]) {
      it(`LUKS2, ${kdfName}, ${sectorSize}-byte sectors, data by reencrypt --encrypt: decrypts to the plaintext`, async () => {
        const plaintext = randomBytes(96 * 1024);
        const data = scratch.file(`l2-${kdfName}-${sectorSize}.data`);
        const header = scratch.file(`l2-${kdfName}-${sectorSize}.hdr`);
        writeFileSync(data, plaintext);
        cryptsetupOk(
          'reencrypt',
          '--encrypt',
          '--disable-locks',
          '-q',
          '--type',
          'luks2',
          '--header',
          header,
          '--sector-size',
          String(sectorSize),
          ...kdf,
          '--key-file',
          scratch.keyFile(passphrase),
          data,
        );
        expect(readFileSync(data).equals(plaintext)).to.equal(false);
        expect((await readAll(data, passphrase, header)).equals(plaintext)).to.equal(true);
        await expectRefused(data, wrong, header);
      });
    }
  }

  it('LUKS1 (a reencrypt header converted with cryptsetup convert --type luks1): decrypts to the plaintext', async () => {
    const plaintext = randomBytes(80 * 1024);
    const data = scratch.file('l1.data');
    const header = scratch.file('l1.hdr');
    writeFileSync(data, plaintext);
    cryptsetupOk(
      'reencrypt',
      '--encrypt',
      '--disable-locks',
      '-q',
      '--type',
      'luks2',
      '--header',
      header,
      '--sector-size',
      '512',
      ...FAST_PBKDF2,
      '--key-file',
      scratch.keyFile(passphrase),
      data,
    );
    cryptsetupOk('convert', '-q', '--type', 'luks1', header);
    expect(cryptsetupOk('luksDump', header)).to.match(/^Version:\s+1$/m);
    expect((await readAll(data, passphrase, header)).equals(plaintext)).to.equal(true);
    await expectRefused(data, wrong, header);
  });

  for (const [type, kdf, sectorArgs] of [
    ['luks1', ['--pbkdf-force-iterations', '1000'], []],
    ['luks2', FAST_PBKDF2, ['--sector-size', '512']],
    ['luks2', FAST_ARGON2ID, ['--sector-size', '4096']],
  ] as const) {
    it(`${type} by luksFormat ${[...kdf, ...sectorArgs].join(' ')}: the passphrase unlocks it, the layout is cryptsetup's`, async () => {
      const image = scratch.file(`format-${type}-${kdf[1]}.img`);
      writeFileSync(image, Buffer.alloc(0));
      writeFileSync(image, Buffer.alloc(20 * 1024 * 1024));
      cryptsetupOk('luksFormat', '-q', '--type', type, ...kdf, ...sectorArgs, '--key-file', scratch.keyFile(passphrase), image);
      const dump = cryptsetupOk('luksDump', image);
      const offset = type === 'luks1' ? Number(/Payload offset:\s+(\d+)/.exec(dump)![1]) * 512 : Number(/offset: (\d+) \[bytes\]/.exec(dump)![1]);
      const opened = await LuksImage.open(image);
      try {
        const volume = await opened.unlock(passphrase);
        expect(opened.dataLayout().offset).to.equal(offset);
        expect(volume.sectorSize).to.equal(type === 'luks1' ? 512 : Number(sectorArgs[1]));
        expect(volume.size).to.equal(20 * 1024 * 1024 - offset);
      } finally {
        await opened.close();
      }
      await expectRefused(image, wrong);
    });
  }
});
