// Hostile headers: corrupted bytes, and metadata that passes the checksum but not the rules. Each is refused with
// a named LuksError in one line, or (a damaged copy with a good twin) read correctly; never a crash or a hang.
import { expect } from 'chai';
import fc from 'fast-check';
import { readFileSync, writeFileSync } from 'node:fs';
import { LuksCostError, LuksError, LuksFormatError, LuksUnsupportedError } from '../../src/luks/errors.js';
import { LuksImage } from '../../src/luks/image.js';
import { FAST_PBKDF2, Scratch, cryptsetupOk } from './cryptsetup.js';
import { TEST_LIMITS, sampleImage, withJsonText, withMetadata, type Metadata, type Sample } from './forge.js';

/** Opens and unlocks `bytes`: the plaintext it reads, or the LuksError it throws (anything else fails the test). */
async function outcome(scratch: Scratch, bytes: Buffer, passphrase: Buffer): Promise<Buffer | LuksError> {
  const path = scratch.file('hostile.img');
  writeFileSync(path, bytes);
  let image: LuksImage | undefined;
  try {
    image = await LuksImage.open(path, { limits: TEST_LIMITS });
    const volume = await image.unlock(passphrase);
    return await volume.readSectors(0, volume.size / volume.sectorSize);
  } catch (e) {
    if (!(e instanceof LuksError)) throw e;
    expect(e.message).not.to.include('\n');
    expect(e.message).not.to.include(passphrase.toString());
    return e;
  } finally {
    await image?.close();
  }
}

/** A segment may declare a fixed size below the file's: what is read must then be the start of the plaintext. */
function expectPlaintextPrefix(read: Buffer, plaintext: Buffer): void {
  expect(read.length).to.be.at.most(plaintext.length);
  expect(read.equals(plaintext.subarray(0, read.length))).to.equal(true);
}

async function refusal(scratch: Scratch, bytes: Buffer, passphrase: Buffer): Promise<LuksError> {
  const result = await outcome(scratch, bytes, passphrase);
  if (!(result instanceof LuksError)) return expect.fail('the hostile image was accepted');
  return result;
}

describe('luks: hostile headers', function () {
  this.timeout(120_000);
  let scratch: Scratch;
  let sample: Sample;
  before(async () => {
    scratch = new Scratch();
    sample = await sampleImage(scratch, 'sample.img');
  });
  after(() => scratch.dispose());

  it('reads the sample as written (the baseline the corruptions start from)', async () => {
    expect(await outcome(scratch, sample.bytes, sample.passphrase)).to.deep.equal(sample.plaintext);
  });

  it('property: random byte corruptions in both header copies are refused by name or read correctly (or a correct prefix)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ at: fc.integer({ min: 0, max: 2 * 16384 - 1 }), xor: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 8 }),
        async (flips) => {
          const bytes = Buffer.from(sample.bytes);
          for (const { at, xor } of flips) bytes[at]! ^= xor;
          const result = await outcome(scratch, bytes, sample.passphrase);
          if (!(result instanceof LuksError)) expectPlaintextPrefix(result, sample.plaintext);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('property: metadata edits with valid checksums are refused by name or read correctly (or a correct prefix)', async () => {
    const paths = [
      ['keyslots', '0', 'key_size'],
      ['keyslots', '0', 'area', 'offset'],
      ['keyslots', '0', 'area', 'size'],
      ['keyslots', '0', 'area', 'key_size'],
      ['keyslots', '0', 'af', 'stripes'],
      ['keyslots', '0', 'kdf', 'iterations'],
      ['keyslots', '0', 'kdf', 'salt'],
      ['keyslots', '0', 'kdf', 'type'],
      ['segments', '0', 'offset'],
      ['segments', '0', 'size'],
      ['segments', '0', 'sector_size'],
      ['segments', '0', 'iv_tweak'],
      ['segments', '0', 'encryption'],
      ['digests', '0', 'iterations'],
      ['digests', '0', 'digest'],
      ['digests', '0', 'keyslots'],
      ['digests', '0', 'segments'],
      ['config', 'json_size'],
      ['config', 'keyslots_size'],
      ['keyslots', '0'],
      ['segments'],
      ['tokens'],
    ];
    const value = fc.oneof(
      fc.jsonValue({ maxDepth: 2 }),
      fc.integer({ min: -1, max: 1 << 30 }),
      fc.integer({ min: 0, max: 1 << 30 }).map(String),
      fc.constantFrom('0', '32768', '294912', '18446744073709551615', '4096', 'dynamic', 'AAAA', 'argon2id', 'argon2i', 'pbkdf2'),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...paths), value, async (path, replacement) => {
        const bytes = withMetadata(sample.bytes, (m) => {
          let node = m;
          for (const key of path.slice(0, -1)) node = node[key];
          node[path.at(-1)!] = replacement;
        });
        const result = await outcome(scratch, bytes, sample.passphrase);
        if (!(result instanceof LuksError)) expectPlaintextPrefix(result, sample.plaintext);
      }),
      { numRuns: 150 },
    );
  });

  it('reads through a damaged primary copy, from the secondary', async () => {
    const bytes = Buffer.from(sample.bytes);
    bytes[5000]! ^= 1;
    expect(await outcome(scratch, bytes, sample.passphrase)).to.deep.equal(sample.plaintext);
  });

  it('refuses an image whose both copies fail their checksum', async () => {
    const bytes = Buffer.from(sample.bytes);
    bytes[5000]! ^= 1;
    bytes[16384 + 5000]! ^= 1;
    const e = await refusal(scratch, bytes, sample.passphrase);
    expect(e).to.be.instanceOf(LuksFormatError);
    expect(e.message).to.match(/checksum/);
  });

  const cases: [string, (m: Metadata) => void, typeof LuksError, RegExp][] = [
    [
      'an integrity segment',
      (m) => {
        m.segments['0'].integrity = { type: 'hmac(sha256)', journal_encryption: 'none', journal_integrity: 'none' };
      },
      LuksUnsupportedError,
      /integrity/,
    ],
    [
      'an unknown data cipher',
      (m) => {
        m.segments['0'].encryption = 'aes-cbc-essiv:sha256';
      },
      LuksUnsupportedError,
      /cipher "aes-cbc-essiv:sha256"/,
    ],
    [
      'an unknown keyslot cipher',
      (m) => {
        m.keyslots['0'].area.encryption = 'serpent-xts-plain64';
      },
      LuksUnsupportedError,
      /cipher "serpent-xts-plain64"/,
    ],
    [
      'a mandatory requirement',
      (m) => {
        m.config.requirements = { mandatory: ['online-reencrypt-v2'] };
      },
      LuksUnsupportedError,
      /requirement "online-reencrypt-v2"/,
    ],
    [
      'an absurd Argon2 memory cost',
      (m) => {
        m.keyslots['0'].kdf = { type: 'argon2id', time: 4, memory: 4194304, cpus: 4, salt: m.keyslots['0'].kdf.salt };
      },
      LuksCostError,
      /argon2 memory/,
    ],
    [
      'an absurd PBKDF2 iteration count',
      (m) => {
        m.keyslots['0'].kdf.iterations = 2 ** 31;
      },
      LuksCostError,
      /PBKDF2 iterations/,
    ],
    [
      'an absurd digest iteration count',
      (m) => {
        m.digests['0'].iterations = 2 ** 40;
      },
      LuksCostError,
      /PBKDF2 iterations/,
    ],
    [
      'overlapping keyslot areas',
      (m) => {
        m.keyslots['1'] = m.keyslots['0'];
        m.digests['0'].keyslots.push('1');
      },
      LuksFormatError,
      /overlap/,
    ],
    [
      'data inside the keyslots area',
      (m) => {
        m.segments['0'].offset = '65536';
      },
      LuksFormatError,
      /overlaps the header/,
    ],
    [
      'a numeric uint64',
      (m) => {
        m.segments['0'].offset = 294912;
      },
      LuksFormatError,
      /segment 0.offset is not a string/,
    ],
    [
      'a missing tokens object',
      (m) => {
        delete m.tokens;
      },
      LuksFormatError,
      /has no tokens/,
    ],
    [
      "a json_size that is not the header's",
      (m) => {
        m.config.json_size = '4096';
      },
      LuksFormatError,
      /json_size/,
    ],
    [
      'a reencryption keyslot',
      (m) => {
        m.keyslots['0'].type = 'reencrypt';
      },
      LuksUnsupportedError,
      /keyslot type "reencrypt"/,
    ],
  ];
  for (const [what, edit, kind, pattern] of cases) {
    it(`refuses ${what} with ${kind.name}`, async () => {
      const started = Date.now();
      const e = await refusal(scratch, withMetadata(sample.bytes, edit), sample.passphrase);
      expect(e).to.be.instanceOf(kind);
      expect(e.message).to.match(pattern);
      expect(Date.now() - started).to.be.below(5000);
    });
  }

  it('refuses JSON that fills its area without a NUL, and JSON nested beyond any stack', async () => {
    const full = Buffer.from(sample.bytes);
    full.fill('{'.charCodeAt(0), 4096, 16384);
    full.fill('{'.charCodeAt(0), 16384 + 4096, 32768);
    expect(await refusal(scratch, full, sample.passphrase)).to.be.instanceOf(LuksFormatError);
    const deep = withJsonText(sample.bytes, `{"a":${'['.repeat(12000)}`);
    const e = await refusal(scratch, deep, sample.passphrase);
    expect(e).to.be.instanceOf(LuksFormatError);
    expect(e.message).to.match(/not valid JSON/);
  });

  it('property: random byte corruptions of a LUKS1 header from cryptsetup are refused by name or still unlock', async () => {
    const path = scratch.file('luks1.img');
    writeFileSync(path, Buffer.alloc(2 * 1024 * 1024));
    cryptsetupOk('luksFormat', '-q', '--type', 'luks1', ...FAST_PBKDF2.slice(2), '--key-file', scratch.keyFile(sample.passphrase), path);
    const original = readFileSync(path);
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ at: fc.integer({ min: 0, max: 591 }), xor: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 4 }),
        async (flips) => {
          const bytes = Buffer.from(original);
          for (const { at, xor } of flips) bytes[at]! ^= xor;
          writeFileSync(path, bytes);
          let image: LuksImage | undefined;
          try {
            image = await LuksImage.open(path, { limits: TEST_LIMITS });
            const volume = await image.unlock(sample.passphrase);
            expect(volume.size % 512).to.equal(0);
            if (volume.size > 0) expect((await volume.readSectors(0, 1)).length).to.equal(512);
          } catch (e) {
            if (!(e instanceof LuksError)) throw e;
            expect(e.message).not.to.include('\n');
          } finally {
            await image?.close();
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('refuses a file too small for its header and one without LUKS magic', async () => {
    expect(await refusal(scratch, sample.bytes.subarray(0, 20000), sample.passphrase)).to.be.instanceOf(LuksFormatError);
    expect(await refusal(scratch, Buffer.alloc(1 << 20), sample.passphrase)).to.be.instanceOf(LuksFormatError);
  });
});
