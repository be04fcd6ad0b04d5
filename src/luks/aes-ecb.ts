// AES-ECB in place, through the system's libcrypto (OpenSSL 3, the library node:crypto also wraps) by koffi.
// node:crypto's Cipher.update returns a new zero-filled buffer per call, which costs more than the AES itself
// (about 2.5 against 7 GB/s for 128 KiB on the development host); EVP_EncryptUpdate encrypts where the data lies.
import koffi from 'koffi';
import { LuksUnsupportedError } from './errors.js';

interface Evp {
  newContext: () => unknown;
  freeContext: (ctx: unknown) => void;
  algorithm: Record<16 | 32, () => unknown>;
  init: (ctx: unknown, type: unknown, engine: null, key: Buffer, iv: null, encrypt: number) => number;
  setPadding: (ctx: unknown, padding: number) => number;
  update: (ctx: unknown, out: Buffer, outLength: number[], input: Buffer, inputLength: number) => number;
}

let evp: Evp | undefined;

function libcrypto(): Evp {
  if (evp) return evp;
  let lib: koffi.IKoffiLib;
  try {
    lib = koffi.load('libcrypto.so.3');
  } catch {
    throw new LuksUnsupportedError('aes-xts-plain64 without libcrypto.so.3 (OpenSSL 3; Debian package libssl3)');
  }
  evp = {
    newContext: lib.func('void *EVP_CIPHER_CTX_new()'),
    freeContext: lib.func('void EVP_CIPHER_CTX_free(void *ctx)'),
    algorithm: { 16: lib.func('void *EVP_aes_128_ecb()'), 32: lib.func('void *EVP_aes_256_ecb()') },
    init: lib.func('int EVP_CipherInit_ex(void *ctx, void *type, void *engine, const uint8_t *key, const uint8_t *iv, int enc)'),
    setPadding: lib.func('int EVP_CIPHER_CTX_set_padding(void *ctx, int padding)'),
    update: lib.func('int EVP_CipherUpdate(void *ctx, uint8_t *out, _Out_ int *outLength, const uint8_t *input, int inputLength)'),
  };
  return evp;
}

// EVP_CIPHER_CTX_free also wipes the key schedule.
const contexts = new FinalizationRegistry<unknown>((ctx) => libcrypto().freeContext(ctx));

export class AesEcb {
  private readonly ctx: unknown;
  private readonly outLength = [0];

  /** `key`: 16 or 32 bytes. */
  constructor(key: Buffer, decrypt: boolean) {
    if (key.length !== 16 && key.length !== 32) throw new LuksUnsupportedError(`AES with a ${key.length * 8}-bit key`);
    const lib = libcrypto();
    this.ctx = lib.newContext();
    if (!this.ctx) throw new Error('libcrypto: EVP_CIPHER_CTX_new failed');
    contexts.register(this, this.ctx);
    if (lib.init(this.ctx, lib.algorithm[key.length](), null, key, null, decrypt ? 0 : 1) !== 1 || lib.setPadding(this.ctx, 0) !== 1) {
      throw new Error('libcrypto: AES-ECB set-up failed');
    }
  }

  /** Encrypts (or decrypts) whole 16-byte blocks of `data` in place. */
  run(data: Buffer): void {
    if (data.length % 16 !== 0) throw new RangeError(`AES-ECB over ${data.length} bytes, not whole blocks`);
    if (data.length === 0) return;
    if (libcrypto().update(this.ctx, data, this.outLength, data, data.length) !== 1 || this.outLength[0] !== data.length) {
      throw new Error('libcrypto: AES-ECB failed');
    }
  }
}
