// Writing a LUKS2 image the way `cryptsetup luksFormat` lays it out (16 KiB header copies, one keyslot at
// 32 KiB, data at 16 MiB), with aes-xts-plain64 and a 512-bit volume key, then the payload encrypted in chunks
// from a stream, so memory stays bounded whatever the image size.
import { randomBytes, randomUUID } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { AF_STRIPES, afMaterialSize, afSplit } from './af.js';
import { LuksFormatError } from './errors.js';
import { DEFAULT_KDF_LIMITS, deriveKey, keyDigest, type Kdf, type KdfLimits } from './kdf.js';
import { encodeHeaderArea } from './luks2-header.js';
import { XtsThreads, xtsThreadCount } from './xts-threads.js';
import { XTS_PLAIN64, XtsSectorCipher } from './xts.js';

const HDR_SIZE = 0x4000;
const KEYSLOTS_START = 2 * HDR_SIZE;
const VOLUME_KEY_SIZE = 64;
/** cryptsetup's default data offset: 16 MiB. */
export const DEFAULT_DATA_OFFSET = 16 * 1024 * 1024;
/** Plaintext handed to an XTS thread at a time. */
const CHUNK = 4 * 1024 * 1024;
const DIGEST_ITERATIONS = 100_000;
/** The area one 512-bit keyslot needs: 256000 bytes of AF material, rounded up to 4096. */
const KEYSLOT_AREA_SIZE = Math.ceil(afMaterialSize(VOLUME_KEY_SIZE, AF_STRIPES) / 4096) * 4096;

export type KdfChoice = { type: 'argon2id'; time: number; memoryKiB: number; cpus: number } | { type: 'pbkdf2'; iterations: number };

/** Argon2id at 128 MiB and 4 passes: a few seconds in JavaScript on a laptop, within cryptsetup's limits. */
export const DEFAULT_KDF = { type: 'argon2id' as const, time: 4, memoryKiB: 128 * 1024, cpus: 4 } satisfies KdfChoice;

export interface WriteOptions {
  /** The image (header then data), or only the data when `header` is given. */
  output: string;
  /**
   * Plaintext: a file path or a readable stream; or `{ inPlace: bytes }`, that many bytes already in `output` where the
   * data goes, encrypted where they lie (as cryptsetup reencrypt does: no second copy of the image is written). A
   * last partial sector is padded with zeros.
   */
  source: string | Readable | { inPlace: number };
  passphrase: Buffer;
  kdf?: KdfChoice;
  /** 512, 1024, 2048 or 4096 (default). */
  sectorSize?: number;
  /** Write the header to this file instead (a detached header; the data then starts at offset 0 of `output`). */
  header?: string;
  /** Data offset in bytes for an attached header (default 16 MiB, at least 288 KiB, a multiple of 4096). */
  dataOffset?: number;
  /** The volume key to use (64 bytes); random when not given. */
  volumeKey?: Buffer;
  label?: string;
  limits?: KdfLimits;
  /** Called as the payload is written, with the plaintext bytes done so far. */
  onProgress?: (bytesDone: number) => void;
}

export interface WriteResult {
  uuid: string;
  dataOffset: number;
  payloadBytes: number;
}

function keyslotKdf(choice: KdfChoice): Kdf {
  const salt = randomBytes(32);
  return choice.type === 'pbkdf2'
    ? { type: 'pbkdf2', hash: 'sha256', iterations: choice.iterations, salt }
    : { type: 'argon2id', time: choice.time, memoryKiB: choice.memoryKiB, cpus: choice.cpus, salt };
}

function kdfJson(kdf: Kdf): object {
  const salt = kdf.salt.toString('base64');
  return kdf.type === 'pbkdf2'
    ? { type: 'pbkdf2', hash: kdf.hash, iterations: kdf.iterations, salt }
    : { type: kdf.type, time: kdf.time, memory: kdf.memoryKiB, cpus: kdf.cpus, salt };
}

/** The two header copies and the keyslots area, ready to be written at offset 0 of the header file. */
async function buildHeader(
  options: WriteOptions,
  volumeKey: Buffer,
  sectorSize: number,
  segmentOffset: number,
  keyslotsSize: number,
  uuid: string,
): Promise<Buffer> {
  const limits = options.limits ?? DEFAULT_KDF_LIMITS;
  const kdf = keyslotKdf(options.kdf ?? DEFAULT_KDF);
  const slotKey = await deriveKey(kdf, options.passphrase, VOLUME_KEY_SIZE, limits);
  const material = afSplit(volumeKey, AF_STRIPES, 'sha256');
  new XtsSectorCipher(slotKey, 512).run(false, material, material, 0n);
  slotKey.fill(0);
  const digestSalt = randomBytes(32);
  const digest = await keyDigest(volumeKey, 'sha256', digestSalt, DIGEST_ITERATIONS, 32);
  const metadata = {
    keyslots: {
      0: {
        type: 'luks2',
        key_size: VOLUME_KEY_SIZE,
        af: { type: 'luks1', stripes: AF_STRIPES, hash: 'sha256' },
        area: { type: 'raw', offset: String(KEYSLOTS_START), size: String(KEYSLOT_AREA_SIZE), encryption: XTS_PLAIN64, key_size: VOLUME_KEY_SIZE },
        kdf: kdfJson(kdf),
      },
    },
    tokens: {},
    segments: { 0: { type: 'crypt', offset: String(segmentOffset), size: 'dynamic', iv_tweak: '0', encryption: XTS_PLAIN64, sector_size: sectorSize } },
    digests: {
      0: {
        type: 'pbkdf2',
        keyslots: ['0'],
        segments: ['0'],
        hash: 'sha256',
        iterations: DIGEST_ITERATIONS,
        salt: digestSalt.toString('base64'),
        digest: digest.toString('base64'),
      },
    },
    config: { json_size: String(HDR_SIZE - 4096), keyslots_size: String(keyslotsSize) },
  };
  const json = JSON.stringify(metadata);
  const common = { hdrSize: HDR_SIZE, seqid: 1n, label: options.label ?? '', uuid, subsystem: '' };
  const header = Buffer.alloc(KEYSLOTS_START + keyslotsSize);
  encodeHeaderArea({ ...common, secondary: false, salt: randomBytes(64), hdrOffset: 0 }, json).copy(header, 0);
  encodeHeaderArea({ ...common, secondary: true, salt: randomBytes(64), hdrOffset: HDR_SIZE }, json).copy(header, HDR_SIZE);
  material.copy(header, KEYSLOTS_START);
  return header;
}

async function writeAll(file: FileHandle, data: Buffer, position: number): Promise<void> {
  for (let done = 0; done < data.length; ) {
    const { bytesWritten } = await file.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** Fills `chunk` from the plaintext; fewer bytes than its length only at the end. */
type Fill = (chunk: Buffer) => Promise<number>;

/** A file is read straight into the chunks (no stream, no copy), from `start` for at most `limit` bytes. */
function fillFromFile(file: FileHandle, start = 0, limit = Number.POSITIVE_INFINITY): Fill {
  let position = start;
  const end = start + limit;
  return async (chunk) => {
    let filled = 0;
    for (let n = -1; filled < chunk.length && position < end && n !== 0; filled += n, position += n) {
      ({ bytesRead: n } = await file.read(chunk, filled, Math.min(chunk.length - filled, end - position), position));
    }
    return filled;
  };
}

/** A stream's pieces, of any sizes, are copied into the chunks. */
function fillFromStream(pieces: AsyncIterator<unknown>): Fill {
  let rest: Buffer = Buffer.alloc(0);
  let ended = false;
  return async (chunk) => {
    let filled = 0;
    while (filled < chunk.length) {
      if (rest.length === 0) {
        if (ended) break;
        const next = await pieces.next();
        if (next.done) {
          ended = true;
          break;
        }
        rest = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as Uint8Array);
      }
      const n = rest.copy(chunk, filled);
      filled += n;
      rest = rest.subarray(n);
    }
    return filled;
  };
}

/** Runs `work` over the plaintext source, a file path or a stream, and lets go of the source afterwards. */
async function withPlaintext(source: string | Readable, work: (fill: Fill) => Promise<number>): Promise<number> {
  if (typeof source !== 'string') {
    const pieces = source[Symbol.asyncIterator]();
    try {
      return await work(fillFromStream(pieces));
    } finally {
      await pieces.return?.();
    }
  }
  const file = await open(source, 'r');
  try {
    return await work(fillFromFile(file));
  } finally {
    await file.close();
  }
}

/**
 * Encrypts the source into `file` from `position`; returns the plaintext bytes written (padded to sectors).
 * The main thread reads chunks and writes them; XTS threads encrypt them meanwhile, two chunks per thread in
 * flight, so memory stays bounded. A payload of one short chunk is encrypted here (no threads for a small image).
 */
async function encryptPayload(
  fill: Fill,
  file: FileHandle,
  position: number,
  cipher: XtsSectorCipher,
  volumeKey: Buffer,
  onProgress?: (bytesDone: number) => void,
): Promise<number> {
  const sectorSize = cipher.sectorSize;
  const threadCount = xtsThreadCount();
  let threads: XtsThreads | undefined;
  const tasks: Promise<ArrayBuffer>[] = [];
  let chunks = 0;
  let dispatched = 0;
  let done = 0;
  const nextChunk = async (): Promise<Buffer> => {
    if (chunks < 2 * threadCount) {
      chunks++;
      return Buffer.from(new ArrayBuffer(CHUNK));
    }
    return Buffer.from(await tasks.shift()!);
  };
  const dispatch = (chunk: Buffer, length: number): void => {
    const at = dispatched;
    dispatched += length;
    threads ??= new XtsThreads(volumeKey, sectorSize, threadCount);
    const encrypting = threads.encrypt(chunk.buffer as ArrayBuffer, length, BigInt(at / 512));
    const task = encrypting.then(async (encrypted) => {
      await writeAll(file, Buffer.from(encrypted, 0, length), position + at);
      done += length;
      onProgress?.(done);
      return encrypted;
    });
    task.catch(() => {}); // awaited when its chunk is reused or at the end; this only keeps it from counting as unhandled
    tasks.push(task);
  };
  try {
    for (;;) {
      const chunk = await nextChunk();
      const filled = await fill(chunk);
      if (filled === CHUNK) {
        dispatch(chunk, CHUNK);
        continue;
      }
      if (filled > 0) {
        const padded = Math.ceil(filled / sectorSize) * sectorSize;
        chunk.fill(0, filled, padded);
        if (dispatched === 0) {
          const data = chunk.subarray(0, padded);
          cipher.run(false, data, data, 0n);
          await writeAll(file, data, position);
          dispatched = padded;
          onProgress?.(padded);
        } else dispatch(chunk, padded);
      }
      break;
    }
    await Promise.all(tasks);
    return dispatched;
  } finally {
    // On a failure, chunks still in flight are let finish before the threads and the file go.
    await Promise.allSettled(tasks);
    await threads?.close();
  }
}

/** Writes a LUKS2 image (or a detached header and its data file); files are created with mode 0600. */
export async function writeLuks2(options: WriteOptions): Promise<WriteResult> {
  const sectorSize = options.sectorSize ?? 4096;
  if (![512, 1024, 2048, 4096].includes(sectorSize)) throw new LuksFormatError(`sector size ${sectorSize} is not 512, 1024, 2048 or 4096`);
  const volumeKey = options.volumeKey ?? randomBytes(VOLUME_KEY_SIZE);
  if (volumeKey.length !== VOLUME_KEY_SIZE) throw new LuksFormatError(`volume key must be ${VOLUME_KEY_SIZE} bytes`);
  const payloadCipher = new XtsSectorCipher(volumeKey, sectorSize);
  const detached = options.header !== undefined;
  const dataOffset = detached ? 0 : (options.dataOffset ?? DEFAULT_DATA_OFFSET);
  if (!detached && (dataOffset % 4096 !== 0 || dataOffset < KEYSLOTS_START + KEYSLOT_AREA_SIZE)) {
    throw new LuksFormatError(`data offset ${dataOffset} must be a multiple of 4096 and at least ${KEYSLOTS_START + KEYSLOT_AREA_SIZE}`);
  }
  // As cryptsetup: the keyslots area fills the space up to the data (capped at 128 MiB); detached, the default size.
  const keyslotsSize = Math.min((detached ? DEFAULT_DATA_OFFSET : dataOffset) - KEYSLOTS_START, 128 * 1024 * 1024);
  const uuid = randomUUID();
  const header = await buildHeader(options, volumeKey, sectorSize, dataOffset, keyslotsSize, uuid);
  const inPlace = typeof options.source === 'object' && 'inPlace' in options.source ? options.source.inPlace : undefined;
  const data = await open(options.output, inPlace === undefined ? 'w' : 'r+', 0o600);
  try {
    await data.chmod(0o600);
    if (inPlace !== undefined) {
      const { size } = await data.stat();
      if (!Number.isSafeInteger(inPlace) || inPlace < 0 || dataOffset + inPlace > size) {
        throw new LuksFormatError(`${options.output} holds ${size} bytes: no ${inPlace} bytes of plaintext at ${dataOffset} to encrypt in place`);
      }
    }
    if (detached) {
      const headerFile = await open(options.header!, 'w', 0o600);
      try {
        await headerFile.chmod(0o600);
        await writeAll(headerFile, header, 0);
      } finally {
        await headerFile.close();
      }
    } else {
      await writeAll(data, header, 0);
      if (inPlace === undefined) await data.truncate(dataOffset);
    }
    const encrypt = (fill: Fill) => encryptPayload(fill, data, dataOffset, payloadCipher, volumeKey, options.onProgress);
    const payloadBytes =
      inPlace === undefined ? await withPlaintext(options.source as string | Readable, encrypt) : await encrypt(fillFromFile(data, dataOffset, inPlace));
    return { uuid, dataOffset, payloadBytes };
  } finally {
    await data.close();
  }
}
