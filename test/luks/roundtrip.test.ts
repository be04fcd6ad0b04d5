// Writer → reader round trips over random sizes, sector sizes, keys and passphrases, random access included,
// and a multi-chunk payload from a stream in odd-sized pieces.
import { expect } from 'chai';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { LuksPassphraseError, LuksUnsupportedError } from '../../src/luks/errors.js';
import { LuksImage } from '../../src/luks/image.js';
import { writeLuks2 } from '../../src/luks/writer.js';
import { Scratch } from './cryptsetup.js';

const FAST = { type: 'pbkdf2', iterations: 1000 } as const;

describe('luks: writer → reader round trips', function () {
  this.timeout(120_000);
  let scratch: Scratch;
  before(() => {
    scratch = new Scratch();
  });
  after(() => scratch.dispose());

  it('property: any payload, sector size, key and passphrase reads back, whole and by random sector ranges', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          size: fc.integer({ min: 0, max: 48 * 1024 }),
          sectorSize: fc.constantFrom(512, 1024, 2048, 4096),
          volumeKey: fc.uint8Array({ minLength: 64, maxLength: 64 }).filter((k) => !Buffer.from(k.subarray(0, 32)).equals(k.subarray(32))),
          passphrase: fc.uint8Array({ minLength: 1, maxLength: 80 }),
          detached: fc.boolean(),
          pick: fc.tuple(fc.nat(), fc.nat()),
        }),
        async ({ size, sectorSize, volumeKey, passphrase, detached, pick }) => {
          const plaintext = randomBytes(size);
          const output = scratch.file('round.img');
          const header = detached ? scratch.file('round.hdr') : undefined;
          await writeLuks2({
            output,
            header,
            source: Readable.from([plaintext]),
            passphrase: Buffer.from(passphrase),
            kdf: FAST,
            sectorSize,
            volumeKey: Buffer.from(volumeKey),
            dataOffset: 294912,
          });
          const padded = Buffer.concat([plaintext, Buffer.alloc((sectorSize - (size % sectorSize)) % sectorSize)]);
          const image = await LuksImage.open(output, { header });
          try {
            const volume = await image.unlock(Buffer.from(passphrase));
            expect(volume.size).to.equal(padded.length);
            expect((await volume.readSectors(0, volume.size / sectorSize)).equals(padded)).to.equal(true);
            const sectors = volume.size / sectorSize;
            if (sectors > 0) {
              const first = pick[0] % sectors;
              const count = pick[1] % (sectors - first + 1);
              expect((await volume.readSectors(first, count)).equals(padded.subarray(first * sectorSize, (first + count) * sectorSize))).to.equal(true);
            }
            // A NUL appended would not do: HMAC pads short keys with zeros, so PBKDF2 cannot tell the two apart.
            await image.unlock(Buffer.concat([Buffer.from(passphrase), Buffer.from('x')])).then(
              () => expect.fail('a longer passphrase unlocked the image'),
              (e: unknown) => expect(e).to.be.instanceOf(LuksPassphraseError),
            );
          } finally {
            await image.close();
          }
        },
      ),
      { numRuns: 15 },
    );
  });

  it('streams a payload of several chunks arriving in odd-sized pieces, reporting its progress', async () => {
    // More 4 MiB chunks than are in flight at once (two per XTS thread, at most four threads): chunks are reused.
    const plaintext = randomBytes(37 * 1024 * 1024 + 12345);
    const pieces: Buffer[] = [];
    for (let at = 0, n = 1; at < plaintext.length; at += n, n = ((n * 7 + 3) % 300_000) + 1) pieces.push(plaintext.subarray(at, at + n));
    const output = scratch.file('stream.img');
    const passphrase = Buffer.from('stream');
    const progress: number[] = [];
    const result = await writeLuks2({ output, source: Readable.from(pieces), passphrase, kdf: FAST, onProgress: (done) => progress.push(done) });
    expect(result.payloadBytes).to.equal(Math.ceil(plaintext.length / 4096) * 4096);
    expect(progress.length).to.be.greaterThan(8);
    expect(progress.every((done, i) => i === 0 || done > progress[i - 1]!)).to.equal(true);
    expect(progress.at(-1)).to.equal(result.payloadBytes);
    const image = await LuksImage.open(output);
    try {
      const volume = await image.unlock(passphrase);
      expect((await volume.readSectors(0, volume.size / 4096)).subarray(0, plaintext.length).equals(plaintext)).to.equal(true);
      expect((await volume.readSectors(3000, 2)).equals(plaintext.subarray(3000 * 4096, 3002 * 4096))).to.equal(true);
    } finally {
      await image.close();
    }
  });

  it('encrypts in place, as cryptsetup reencrypt does: the same ciphertext as a second copy, the bytes around it untouched', async () => {
    const plaintext = randomBytes(13 * 1024 * 1024 + 4096);
    const dataOffset = 16 * 1024 * 1024;
    const volumeKey = randomBytes(64);
    const passphrase = Buffer.from('in place');
    const copied = scratch.file('copied.img');
    await writeLuks2({ output: copied, source: Readable.from([plaintext]), passphrase, kdf: FAST, volumeKey });
    const inPlace = scratch.file('in-place.img');
    const trailer = randomBytes(5000);
    writeFileSync(inPlace, Buffer.concat([Buffer.alloc(dataOffset), plaintext, trailer]));
    await writeLuks2({ output: inPlace, source: { inPlace: plaintext.length }, passphrase, kdf: FAST, volumeKey, dataOffset });
    const written = readFileSync(inPlace);
    expect(written.length).to.equal(dataOffset + plaintext.length + trailer.length);
    expect(written.subarray(dataOffset).equals(Buffer.concat([readFileSync(copied).subarray(dataOffset), trailer]))).to.equal(true);
    const image = await LuksImage.open(inPlace);
    try {
      const volume = await image.unlock(passphrase);
      expect((await volume.readSectors(0, plaintext.length / 4096)).equals(plaintext)).to.equal(true);
    } finally {
      await image.close();
    }
    await writeLuks2({ output: inPlace, source: { inPlace: written.length }, passphrase, kdf: FAST, dataOffset }).then(
      () => expect.fail('encrypted past the end of the file'),
      (e: unknown) => expect(String(e)).to.match(/holds \d+ bytes: no \d+ bytes of plaintext at 16777216 to encrypt in place/),
    );
  });

  it('a source that fails after several chunks fails the write with its error, with chunks still in flight', async () => {
    async function* failing() {
      for (let i = 0; i < 12; i++) yield randomBytes(1024 * 1024);
      throw new Error('source went away');
    }
    let error: unknown;
    await writeLuks2({ output: scratch.file('failing.img'), source: Readable.from(failing()), passphrase: Buffer.from('f'), kdf: FAST }).catch((e: unknown) => {
      error = e;
    });
    expect((error as Error).message).to.equal('source went away');
  });

  it('refuses a volume key whose two XTS halves are equal, by name', async () => {
    await writeLuks2({
      output: scratch.file('weak.img'),
      source: Readable.from([Buffer.alloc(4096)]),
      passphrase: Buffer.from('w'),
      kdf: FAST,
      volumeKey: Buffer.alloc(64, 7),
    }).then(
      () => expect.fail('a weak XTS key was used'),
      (e: unknown) => {
        expect(e).to.be.instanceOf(LuksUnsupportedError);
        expect((e as Error).message).to.equal('aes-xts-plain64 key whose two halves are equal');
      },
    );
  });

  it('refuses reads outside the volume', async () => {
    const output = scratch.file('bounds.img');
    const passphrase = Buffer.from('bounds');
    await writeLuks2({ output, source: Readable.from([randomBytes(8192)]), passphrase, kdf: FAST });
    const image = await LuksImage.open(output);
    try {
      const volume = await image.unlock(passphrase);
      for (const [first, count] of [
        [2, 1],
        [0, 3],
        [-1, 1],
        [1.5, 1],
      ]) {
        await volume.readSectors(first!, count!).then(
          () => expect.fail(`read ${first}+${count}`),
          (e: unknown) => expect(e).to.be.instanceOf(RangeError),
        );
      }
    } finally {
      await image.close();
    }
  });
});
