/*
 * aes-xts-plain64 over whole sectors through OpenSSL's EVP interface: each sector is its own XTS message whose IV
 * is the little-endian 64-bit sector position in 512-byte units, as dm-crypt makes them. The loop is the part that
 * must be native: one EVP call per sector from JavaScript costs more than the AES of a 4 KiB sector.
 *
 * The OpenSSL 3 functions used are declared here rather than taken from <openssl/evp.h>, so that no -dev package
 * is needed: the library is libcrypto.so.3, whose ABI these declarations are.
 */
#include <stddef.h>
#include <stdint.h>

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_cipher_st EVP_CIPHER;
typedef struct ossl_param_st OSSL_PARAM;
EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void);
void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx);
const EVP_CIPHER *EVP_aes_128_xts(void);
const EVP_CIPHER *EVP_aes_256_xts(void);
int EVP_CipherInit_ex2(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, const unsigned char *key, const unsigned char *iv, int enc,
                       const OSSL_PARAM *params);
int EVP_Cipher(EVP_CIPHER_CTX *ctx, unsigned char *out, const unsigned char *in, unsigned int length);

/* A context keyed with the XTS key pair (32 or 64 bytes) for one direction; NULL if OpenSSL refuses the key. */
EVP_CIPHER_CTX *xts_new(const unsigned char *key, uint32_t key_length, int decrypt) {
  const EVP_CIPHER *cipher = key_length == 64 ? EVP_aes_256_xts() : key_length == 32 ? EVP_aes_128_xts() : NULL;
  EVP_CIPHER_CTX *ctx = cipher ? EVP_CIPHER_CTX_new() : NULL;
  if (ctx && EVP_CipherInit_ex2(ctx, cipher, key, NULL, !decrypt, NULL) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

/* Frees the context, which also wipes its key schedule. */
void xts_free(EVP_CIPHER_CTX *ctx) {
  EVP_CIPHER_CTX_free(ctx);
}

/*
 * `length` bytes (whole sectors of `sector_size`) from `in` to `out` (which may be `in`); the first sector's IV is
 * `first_iv`, each next one sector_size / 512 more, wrapping at 2^64 as dm-crypt's does. 0, or -1 on a failure.
 */
int xts_run(EVP_CIPHER_CTX *ctx, const unsigned char *in, unsigned char *out, uint64_t length, uint32_t sector_size, uint64_t first_iv) {
  unsigned char iv[16] = { 0 };
  uint64_t position = first_iv;
  for (uint64_t offset = 0; offset < length; offset += sector_size, position += sector_size / 512) {
    for (int i = 0; i < 8; i++) iv[i] = (unsigned char)(position >> (8 * i));
    if (EVP_CipherInit_ex2(ctx, NULL, NULL, iv, -1, NULL) != 1) return -1;
    if (EVP_Cipher(ctx, out + offset, in + offset, sector_size) <= 0) return -1;
  }
  return 0;
}
