// The launch session (AMD SEV API, "LAUNCH_START" and "Key Wrapping"): the guest owner draws the transport
// keys TEK (encryption) and TIK (integrity), wraps them for one platform and binds the policy to them.
//
//   Z      = ECDH P-384 between the owner's fresh DH key (GODH) and the platform's PDH  (x coordinate, big-endian)
//   master = KDF(Z, "sev-master-secret", nonce)    KEK = KDF(master, "sev-kek")    KIK = KDF(master, "sev-kik")
//   wrap_tk = AES-128-CTR(KEK, wrap_iv, TEK || TIK)      wrap_mac = HMAC-SHA256(KIK, wrap_tk)
//   policy_mac = HMAC-SHA256(TIK, policy as u32 LE)
// The session blob is nonce[16] wrap_tk[32] wrap_iv[16] wrap_mac[32] policy_mac[32] = 128 bytes.
import { createCipheriv, createDecipheriv, diffieHellman, generateKeyPairSync, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { Usage, describeAlgorithm } from './certificate-key.js';
import { hmacSha256, kdf } from './kdf.js';
import { policyBytes } from './policy.js';
import { SevCertificate } from './sev-certificate.js';

export const SESSION_SIZE = 128;

export interface SessionBlob {
  nonce: Uint8Array;
  wrapTk: Uint8Array;
  wrapIv: Uint8Array;
  wrapMac: Uint8Array;
  policyMac: Uint8Array;
}

export interface TransportKeys {
  tek: Uint8Array;
  tik: Uint8Array;
}

const fields = [
  ['nonce', 16],
  ['wrapTk', 32],
  ['wrapIv', 16],
  ['wrapMac', 32],
  ['policyMac', 32],
] as const;

export function encodeSession(s: SessionBlob): Buffer {
  const out = Buffer.alloc(SESSION_SIZE);
  let at = 0;
  for (const [name, size] of fields) {
    if (s[name].length !== size) throw new RangeError(`session ${name} must be ${size} bytes, got ${s[name].length}`);
    out.set(s[name], at);
    at += size;
  }
  return out;
}

export function parseSession(bytes: Uint8Array): SessionBlob {
  if (bytes.length !== SESSION_SIZE) throw new RangeError(`session blob is ${bytes.length} bytes, expected ${SESSION_SIZE}`);
  const out: Record<string, Uint8Array> = {};
  let at = 0;
  for (const [name, size] of fields) {
    out[name] = Uint8Array.from(bytes.subarray(at, at + size));
    at += size;
  }
  return out as unknown as SessionBlob;
}

function sessionKeys(z: Uint8Array, nonce: Uint8Array): { kek: Buffer; kik: Buffer } {
  const master = kdf(z, 'sev-master-secret', nonce, 16);
  return { kek: kdf(master, 'sev-kek', new Uint8Array(0), 16), kik: kdf(master, 'sev-kik', new Uint8Array(0), 16) };
}

/** Owner side: wraps the transport keys under the shared secret `z` (deterministic given nonce and IV). */
export function wrapTransportKeys(z: Uint8Array, keys: TransportKeys, policy: number, nonce: Uint8Array, wrapIv: Uint8Array): SessionBlob {
  if (keys.tek.length !== 16 || keys.tik.length !== 16) throw new RangeError('TEK and TIK are 16 bytes each');
  const { kek, kik } = sessionKeys(z, nonce);
  const cipher = createCipheriv('aes-128-ctr', kek, wrapIv);
  const wrapTk = Buffer.concat([cipher.update(keys.tek), cipher.update(keys.tik), cipher.final()]);
  return {
    nonce: Uint8Array.from(nonce),
    wrapTk,
    wrapIv: Uint8Array.from(wrapIv),
    wrapMac: hmacSha256(kik, wrapTk),
    policyMac: hmacSha256(keys.tik, policyBytes(policy)),
  };
}

/** Which integrity check of a session failed. */
export class SessionIntegrityError extends Error {
  override readonly name = 'SessionIntegrityError';
  constructor(readonly check: 'wrap_mac' | 'policy_mac') {
    super(
      check === 'wrap_mac'
        ? 'wrap_mac does not verify: the session was made for another PDH or was altered'
        : 'policy_mac does not verify: the policy differs from the one the session was made for',
    );
  }
}

/** Firmware side: unwraps TEK and TIK, checking wrap_mac and then policy_mac. */
export function unwrapTransportKeys(z: Uint8Array, session: SessionBlob, policy: number): TransportKeys {
  const { kek, kik } = sessionKeys(z, session.nonce);
  if (!timingSafeEqual(hmacSha256(kik, session.wrapTk), session.wrapMac)) throw new SessionIntegrityError('wrap_mac');
  const decipher = createDecipheriv('aes-128-ctr', kek, session.wrapIv);
  const plain = Buffer.concat([decipher.update(session.wrapTk), decipher.final()]);
  const keys = { tek: plain.subarray(0, 16), tik: plain.subarray(16, 32) };
  if (!timingSafeEqual(hmacSha256(keys.tik, policyBytes(policy)), session.policyMac)) throw new SessionIntegrityError('policy_mac');
  return keys;
}

/** The ECDH shared secret as AMD's firmware and virtee/sev use it: the x coordinate, big-endian. */
export function sharedSecret(privateKey: KeyObject, peer: SevCertificate): Buffer {
  const algo = describeAlgorithm(peer.algorithm);
  if (peer.usage !== Usage.PDH || algo?.kind !== 'ecdh') throw new RangeError('the peer certificate is not a Diffie-Hellman (PDH) certificate');
  return diffieHellman({ privateKey, publicKey: peer.publicKey() });
}

/** Everything the guest owner produces for one launch and must keep (TEK/TIK) or send (GODH, session). */
export interface OwnerSession {
  godh: SevCertificate;
  session: Buffer;
  keys: TransportKeys;
  policy: number;
}

/** Owner side: a fresh session for a platform's PDH (which the caller verified through its chain). */
export function createSession(pdh: SevCertificate, policy: number, keys: TransportKeys = { tek: randomBytes(16), tik: randomBytes(16) }): OwnerSession {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
  const godh = SevCertificate.create({ usage: Usage.PDH, publicKey });
  const z = sharedSecret(privateKey, pdh);
  const blob = wrapTransportKeys(z, keys, policy, randomBytes(16), randomBytes(16));
  return { godh, session: encodeSession(blob), keys, policy };
}
