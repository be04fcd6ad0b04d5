// The hash names LUKS headers carry (af.hash, kdf.hash, digest hash, LUKS1 hash-spec), mapped to node:crypto.
import { LuksUnsupportedError } from './errors.js';

const DIGEST_SIZES: Record<string, number> = { sha1: 20, sha256: 32, sha512: 64 };

/** The digest size of a LUKS hash name; refuses any hash this implementation does not support. */
export function hashSize(name: string): number {
  const size = DIGEST_SIZES[name];
  if (size === undefined) throw new LuksUnsupportedError(`unsupported hash ${JSON.stringify(name.slice(0, 32))} (supported: sha1, sha256, sha512)`);
  return size;
}
