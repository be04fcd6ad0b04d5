// A disk passphrase as a launch secret, in the one shape every owner sends (the key broker, and the local owner of
// `ts-vmm run --passphrase-file`): its UTF-8 bytes zero-padded to SECRET_SIZE. The guest reads it up to the first
// NUL, as libkrun's does, so a passphrase is 1 to SECRET_SIZE bytes of UTF-8 without one. A passphrase file's
// bytes are the passphrase exactly (a trailing newline included), as cryptsetup's --key-file takes them.
import { SECRET_SIZE } from './wire.js';

export class PassphraseError extends Error {
  override readonly name = 'PassphraseError';
}

/** The passphrase held in `bytes` (from `source`, named in errors, never the value). */
export function launchPassphrase(bytes: Uint8Array, source: string): string {
  if (bytes.length === 0 || bytes.length > SECRET_SIZE || bytes.includes(0)) {
    throw new PassphraseError(`${source}: a launch passphrase is 1 to ${SECRET_SIZE} bytes with no NUL byte (this one is ${bytes.length} bytes)`);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new PassphraseError(`${source}: a launch passphrase is UTF-8 text (the key broker's JSON carries it as a string)`);
  }
}

/** The LAUNCH_SECRET plaintext for `passphrase`; the caller zeroes it after use. */
export function launchSecret(passphrase: string): Buffer {
  const secret = Buffer.alloc(SECRET_SIZE);
  secret.write(passphrase, 'utf8');
  return secret;
}
