// Images from the LUKS2 writer, checked by real cryptsetup: recognised, parsed without repair, unlocked by the
// right passphrase only, the very volume key, and data that cryptsetup's own reencrypt decrypts exactly.
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { writeLuks2, type KdfChoice } from '../../src/luks/writer.js';
import { Scratch, cryptsetup, cryptsetupOk } from './cryptsetup.js';

const sha256 = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

const KDFS: [string, KdfChoice][] = [
  ['argon2id', { type: 'argon2id', time: 4, memoryKiB: 1024, cpus: 2 }],
  ['pbkdf2', { type: 'pbkdf2', iterations: 1000 }],
];

describe('luks: writer images checked by cryptsetup', function () {
  this.timeout(120_000);
  let scratch: Scratch;
  before(() => {
    scratch = new Scratch();
  });
  after(() => scratch.dispose());

  for (const [name, kdf] of KDFS) {
    describe(`${name} keyslot, attached header`, () => {
      const passphrase = randomBytes(20);
      const volumeKey = randomBytes(64);
      let image: string;
      /** The image's hash as written, before cryptsetup first touched it (any load may repair a header copy). */
      let written: string;
      before(async () => {
        image = scratch.file(`attached-${name}.img`);
        const plain = scratch.file(`attached-${name}.plain`);
        writeFileSync(plain, randomBytes(3 * 4096 + 1000));
        await writeLuks2({ output: image, source: plain, passphrase, kdf, volumeKey });
        written = sha256(image);
      });

      it('is LUKS2 to cryptsetup isLuks, with the data at 16 MiB, and mode 0600', () => {
        expect(cryptsetup('isLuks', '--type', 'luks2', image).status).to.equal(0);
        expect(cryptsetupOk('luksDump', image))
          .to.match(/offset: 16777216 \[bytes\]/)
          .and.match(/sector: 4096 \[bytes\]/);
        expect(statSync(image).mode & 0o777).to.equal(0o600);
        expect(statSync(image).size).to.equal(16 * 1024 * 1024 + 4 * 4096);
      });

      it('survives writable cryptsetup loads byte for byte (both header checksums are right, nothing is repaired)', () => {
        const dump = cryptsetup('luksDump', '--debug', image);
        expect(dump.status).to.equal(0);
        expect(dump.stdout + dump.stderr).not.to.match(/checksum error/i);
        expect(sha256(image)).to.equal(written);
      });

      it('opens with the passphrase (open --test-passphrase) and refuses another', () => {
        expect(cryptsetup('open', '--test-passphrase', '--key-file', scratch.keyFile(passphrase), image).status).to.equal(0);
        const wrong = cryptsetup('open', '--test-passphrase', '--key-file', scratch.keyFile(Buffer.concat([passphrase, Buffer.from('x')])), image);
        expect(wrong.status).to.equal(2);
        expect(wrong.stderr).to.match(/No key available/);
      });

      it("holds the writer's volume key (luksDump --dump-volume-key)", () => {
        const out = scratch.file(`vk-${name}`);
        cryptsetupOk('luksDump', '-q', '--dump-volume-key', '--volume-key-file', out, '--key-file', scratch.keyFile(passphrase), image);
        expect(readFileSync(out).equals(volumeKey)).to.equal(true);
      });
    });
  }

  for (const sectorSize of [512, 4096]) {
    it(`detached header, ${sectorSize}-byte sectors: cryptsetup reencrypt --decrypt gives back the plaintext`, async () => {
      const passphrase = randomBytes(16);
      // A whole number of 4096-byte blocks: on a file whose size is not, reencrypt pads the file with zeros.
      const plaintext = randomBytes(64 * 1024 + 3 * 4096);
      const plain = scratch.file(`detached-${sectorSize}.plain`);
      const data = scratch.file(`detached-${sectorSize}.data`);
      const header = scratch.file(`detached-${sectorSize}.hdr`);
      writeFileSync(plain, plaintext);
      await writeLuks2({ output: data, header, source: plain, passphrase, kdf: { type: 'pbkdf2', iterations: 1000 }, sectorSize });
      expect(readFileSync(data).equals(plaintext)).to.equal(false);
      cryptsetupOk(
        'reencrypt',
        '--decrypt',
        '--force-offline-reencrypt',
        '--disable-locks',
        '-q',
        '--key-file',
        scratch.keyFile(passphrase),
        '--header',
        header,
        data,
      );
      expect(readFileSync(data).equals(plaintext)).to.equal(true);
    });
  }
});
