// aes-xts-plain64 over whole sectors, as dm-crypt does it: each sector is its own XTS message whose tweak is
// LE64 of the sector's position in 512-byte units (also for larger sectors; LUKS2 never sets iv_large_sectors).
// The sectors are run by xts-sectors.c through OpenSSL's XTS (libcrypto.so.3, the OpenSSL node:crypto also is):
// node:crypto can start a message only with a new Cipheriv (about 5 µs against 0.6 µs of AES for 4 KiB), and one
// call per sector from JavaScript through koffi still costs more than the AES, so the per-sector loop is native.
import { koffi } from '../sys/koffi.js';
import { buildC } from '../sys/c-build.js';
import { projectFile } from '../sys/project-paths.js';
import { LuksUnsupportedError } from './errors.js';

/** The only data and keyslot cipher supported: dm-crypt's `aes-xts-plain64`. */
export const XTS_PLAIN64 = 'aes-xts-plain64';

interface XtsLibrary {
  create: (key: Buffer, keyLength: number, decrypt: number) => unknown;
  free: (ctx: unknown) => void;
  run: (ctx: unknown, input: Buffer, output: Buffer, length: number, sectorSize: number, firstIv: bigint) => number;
}

let library: XtsLibrary | undefined;

/** The path of xts-sectors.c built into the project's dist/native/, compiling it first if needed. */
export function ensureXtsLibrary(): string {
  return buildC({
    what: 'the XTS sector loop (src/luks/xts-sectors.c)',
    name: 'xts-sectors.so',
    sources: [projectFile('src', 'luks', 'xts-sectors.c')],
    flags: ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra', '-Werror'],
    libraries: ['-l:libcrypto.so.3'],
    dir: projectFile('dist', 'native'),
    packages: 'gcc; libssl3 for libcrypto.so.3',
  });
}

function xtsLibrary(): XtsLibrary {
  if (library) return library;
  const lib = koffi.load(ensureXtsLibrary());
  library = {
    create: lib.func('void *xts_new(const uint8_t *key, uint32_t keyLength, int decrypt)'),
    free: lib.func('void xts_free(void *ctx)'),
    run: lib.func('int xts_run(void *ctx, const uint8_t *input, uint8_t *output, uint64_t length, uint32_t sectorSize, uint64_t firstIv)'),
  };
  return library;
}

// Freeing a context also wipes its key schedule.
const contexts = new FinalizationRegistry<unknown>((ctx) => xtsLibrary().free(ctx));

export class XtsSectorCipher {
  private readonly encryptContext: unknown;
  private readonly decryptContext: unknown;

  /** `key` is the XTS key pair: 32 bytes (AES-128) or 64 bytes (AES-256). */
  constructor(
    key: Buffer,
    readonly sectorSize: number,
  ) {
    if (key.length !== 64 && key.length !== 32) {
      throw new LuksUnsupportedError(`aes-xts-plain64 with a ${key.length * 8}-bit key (supported: 256, 512)`);
    }
    if (![512, 1024, 2048, 4096].includes(sectorSize)) throw new LuksUnsupportedError(`aes-xts-plain64 with ${sectorSize}-byte sectors`);
    // OpenSSL (as the kernel in FIPS mode) refuses an XTS key whose two halves are equal; so does this, by name.
    const half = key.length / 2;
    if (key.subarray(0, half).equals(key.subarray(half))) throw new LuksUnsupportedError('aes-xts-plain64 key whose two halves are equal');
    const lib = xtsLibrary();
    this.encryptContext = lib.create(key, key.length, 0);
    this.decryptContext = lib.create(key, key.length, 1);
    for (const ctx of [this.encryptContext, this.decryptContext]) {
      if (ctx === null) throw new Error('libcrypto: aes-xts set-up failed');
      contexts.register(this, ctx);
    }
  }

  /**
   * Encrypts or decrypts `data` (whole sectors) into `out` (may be `data`); the first sector's IV is
   * `firstIv`, counted in 512-byte units, and each next sector's is sectorSize/512 more.
   */
  run(decrypt: boolean, data: Buffer, out: Buffer, firstIv: bigint): void {
    const size = this.sectorSize;
    if (data.length % size !== 0 || out.length < data.length) throw new RangeError(`${data.length} bytes are not whole ${size}-byte sectors`);
    if (data.length === 0) return;
    const ctx = decrypt ? this.decryptContext : this.encryptContext;
    if (xtsLibrary().run(ctx, data, out, data.length, size, BigInt.asUintN(64, firstIv)) !== 0) throw new Error('libcrypto: aes-xts failed');
  }
}
