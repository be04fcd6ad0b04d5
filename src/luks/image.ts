// Opening a LUKS1 or LUKS2 image: the header read and checked without any secret, then a passphrase turned into
// the volume key (KDF → keyslot area decrypted → AF merge → digest check) and random access to plaintext sectors.
import { timingSafeEqual } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { afMaterialSize, afMerge } from './af.js';
import { LuksFormatError, LuksPassphraseError, LuksUnsupportedError } from './errors.js';
import { DEFAULT_KDF_LIMITS, checkKdf, checkPbkdf2Iterations, deriveKey, keyDigest, type Kdf, type KdfLimits } from './kdf.js';
import { LUKS1_HEADER_SIZE, isLuks1, parseLuks1Header, type Luks1Header } from './luks1-header.js';
import { readExactly, readLuks2Header, type Luks2Header } from './luks2-read.js';
import { XtsSectorCipher } from './xts.js';

export type LuksHeader = { version: 1; luks1: Luks1Header } | { version: 2; luks2: Luks2Header };

export interface OpenOptions {
  /** A detached header file; the image then holds only data (cryptsetup's --header). */
  header?: string;
  limits?: KdfLimits;
}

/** The most plaintext one readSectors call returns. */
export const MAX_READ = 64 * 1024 * 1024;

/** The data area: its offset in the data file, its plaintext size in bytes, and its sector size. */
export interface DataLayout {
  offset: number;
  size: number;
  sectorSize: number;
}

/** A candidate keyslot, in the form both versions share. */
interface Slot {
  kdf: Kdf;
  keySize: number;
  kdfKeySize: number;
  stripes: number;
  afHash: string;
  areaOffset: number;
  priority: number;
}

export class LuksImage {
  private constructor(
    readonly header: LuksHeader,
    private readonly headerFile: FileHandle,
    private readonly dataFile: FileHandle,
    private readonly dataFileSize: number,
    private readonly limits: KdfLimits,
  ) {}

  static async open(path: string, options: OpenOptions = {}): Promise<LuksImage> {
    const dataFile = await open(path, 'r');
    let headerFile = dataFile;
    try {
      if (options.header !== undefined) headerFile = await open(options.header, 'r');
      const headerSize = (await headerFile.stat()).size;
      const dataFileSize = options.header === undefined ? headerSize : (await dataFile.stat()).size;
      if (headerSize < LUKS1_HEADER_SIZE) throw new LuksFormatError('not a LUKS image: too small');
      const start = await readExactly(headerFile, 0, LUKS1_HEADER_SIZE);
      let header: LuksHeader;
      if (isLuks1(start)) header = { version: 1, luks1: parseLuks1Header(start) };
      else header = { version: 2, luks2: await readLuks2Header(headerFile, headerSize) };
      return new LuksImage(header, headerFile, dataFile, dataFileSize, options.limits ?? DEFAULT_KDF_LIMITS);
    } catch (e) {
      if (headerFile !== dataFile) await headerFile.close();
      await dataFile.close();
      throw e;
    }
  }

  async close(): Promise<void> {
    if (this.headerFile !== this.dataFile) await this.headerFile.close();
    await this.dataFile.close();
  }

  /** Where the data lies in the data file, and its sector size. */
  dataLayout(): DataLayout {
    const detached = this.headerFile !== this.dataFile;
    let offset: number;
    let sectorSize: number;
    let declared: number | 'dynamic' = 'dynamic';
    if (this.header.version === 1) {
      offset = this.header.luks1.payloadOffset * 512;
      sectorSize = 512;
    } else {
      const { segments } = this.header.luks2.metadata;
      if (segments.length !== 1) throw new LuksUnsupportedError(`${segments.length} segments (only one; is a reencryption in progress?)`);
      const segment = segments[0]!;
      ({ offset, sectorSize } = segment);
      declared = segment.size;
    }
    if (offset === 0 && !detached) throw new LuksFormatError('the header is detached (data offset 0): open the data file with this header');
    const available = Math.max(0, this.dataFileSize - offset);
    const size = declared === 'dynamic' ? available - (available % sectorSize) : declared;
    if (size > available) throw new LuksFormatError(`data segment of ${size} bytes runs past the end of the image`);
    return { offset, size, sectorSize };
  }

  private slots(): { slots: Slot[]; digest: (key: Buffer) => Promise<boolean> } {
    if (this.header.version === 1) {
      const h = this.header.luks1;
      checkPbkdf2Iterations(h.mkDigestIterations, this.limits);
      return {
        slots: h.keyslots
          .filter((k) => k.active)
          .map((k) => ({
            kdf: { type: 'pbkdf2', hash: h.hashSpec, iterations: k.iterations, salt: k.salt },
            keySize: h.keyBytes,
            kdfKeySize: h.keyBytes,
            stripes: k.stripes,
            afHash: h.hashSpec,
            areaOffset: k.keyMaterialOffset * 512,
            priority: 1,
          })),
        digest: async (key) => timingSafeEqual(await keyDigest(key, h.hashSpec, h.mkDigestSalt, h.mkDigestIterations, 20), h.mkDigest),
      };
    }
    const { metadata } = this.header.luks2;
    const segment = metadata.segments[0]!;
    const digest = metadata.digests.find((d) => d.segments.includes(segment.id));
    if (!digest) throw new LuksFormatError(`segment ${segment.id} has no digest`);
    checkPbkdf2Iterations(digest.iterations, this.limits);
    const slots = metadata.keyslots
      .filter((k) => digest.keyslots.includes(k.id) && k.priority !== 0)
      .map((k) => ({
        kdf: k.kdf,
        keySize: k.keySize,
        kdfKeySize: k.areaKeySize,
        stripes: k.stripes,
        afHash: k.afHash,
        areaOffset: k.areaOffset,
        priority: k.priority ?? 1,
      }))
      .sort((a, b) => b.priority - a.priority);
    return {
      slots,
      digest: async (key) => timingSafeEqual(await keyDigest(key, digest.hash, digest.salt, digest.iterations, digest.digest.length), digest.digest),
    };
  }

  /** Tries every keyslot bound to the data segment; resolves to the unlocked volume. */
  async unlock(passphrase: Buffer): Promise<LuksVolume> {
    const layout = this.dataLayout();
    const { slots, digest } = this.slots();
    for (const slot of slots) checkKdf(slot.kdf, this.limits);
    for (const slot of slots) {
      const kdfKey = await deriveKey(slot.kdf, passphrase, slot.kdfKeySize, this.limits);
      const material = await readExactly(this.headerFile, slot.areaOffset, afMaterialSize(slot.keySize, slot.stripes));
      new XtsSectorCipher(kdfKey, 512).run(true, material, material, 0n);
      kdfKey.fill(0);
      const key = afMerge(material, slot.keySize, slot.stripes, slot.afHash);
      material.fill(0);
      if (await digest(key)) {
        const cipher = new XtsSectorCipher(key, layout.sectorSize);
        key.fill(0);
        return new LuksVolume(this.dataFile, cipher, layout);
      }
      key.fill(0);
    }
    throw new LuksPassphraseError(slots.length === 0 ? 'no usable keyslot' : 'no keyslot opens with this passphrase');
  }
}

/** Plaintext of an unlocked image, sector by sector. */
export class LuksVolume {
  constructor(
    private readonly file: FileHandle,
    private readonly cipher: XtsSectorCipher,
    private readonly layout: DataLayout,
  ) {}

  get sectorSize(): number {
    return this.layout.sectorSize;
  }
  /** Plaintext bytes. */
  get size(): number {
    return this.layout.size;
  }

  /** Decrypts `count` sectors from sector `first` (in sectorSize units). */
  async readSectors(first: number, count: number): Promise<Buffer> {
    const { offset, size, sectorSize } = this.layout;
    const total = size / sectorSize;
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(count) || first < 0 || count < 0 || first + count > total) {
      throw new RangeError(`sectors ${first}+${count} outside the volume's ${total}`);
    }
    if (count * sectorSize > MAX_READ) throw new RangeError(`read of ${count} sectors is above ${MAX_READ} bytes`);
    const data = await readExactly(this.file, offset + first * sectorSize, count * sectorSize);
    this.cipher.run(true, data, data, BigInt(first) * BigInt(sectorSize / 512));
    return data;
  }
}
