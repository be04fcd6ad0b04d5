// The guest owner's files, in the formats sevctl and QEMU use: `<name>_godh.b64` and `<name>_session.b64`
// (base64 of the GODH certificate and of the session blob, what QEMU's sev-guest dh-cert-file and
// session-file take), `<name>_tek.bin` and `<name>_tik.bin` (raw 16-byte keys, kept by the owner), and the
// secret's header and payload files (raw bytes, as `sevctl secret build` writes them).
import { closeSync, existsSync, fchmodSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { SecretPacket } from './secret.js';
import type { OwnerSession, TransportKeys } from './session.js';

export interface SessionFiles {
  godh: string;
  session: string;
  tek: string;
  tik: string;
}

export function sessionFileNames(dir: string, name = 'vm'): SessionFiles {
  return {
    godh: path.join(dir, `${name}_godh.b64`),
    session: path.join(dir, `${name}_session.b64`),
    tek: path.join(dir, `${name}_tek.bin`),
    tik: path.join(dir, `${name}_tik.bin`),
  };
}

export function writeSessionFiles(files: SessionFiles, s: OwnerSession): void {
  writeFileSync(files.godh, Buffer.from(s.godh.bytes).toString('base64'));
  writeFileSync(files.session, s.session.toString('base64'));
  writeKeyFile(files.tek, s.keys.tek);
  writeKeyFile(files.tik, s.keys.tik);
}

/** Writes a key readable by its owner only, also when the file already existed with a wider mode. */
export function writeKeyFile(file: string, key: Uint8Array | string): void {
  const fd = openSync(file, 'w', 0o600);
  try {
    // open's mode applies only to a file it creates.
    fchmodSync(fd, 0o600);
    writeSync(fd, typeof key === 'string' ? Buffer.from(key) : key);
  } finally {
    closeSync(fd);
  }
}

/**
 * Strict base64 (whitespace allowed around it): a typo must not decode to other bytes, as Node's
 * lenient decoder would by dropping what it does not know. The value itself is never echoed: it may be a key.
 */
export function decodeBase64(text: string, what: string): Buffer {
  const trimmed = text.trim();
  if (!isBase64(trimmed)) throw new Error(`${what} is not base64`);
  return Buffer.from(trimmed, 'base64');
}

function isBase64(text: string): boolean {
  return /^[A-Za-z0-9+/]*={0,2}$/.test(text) && text.length % 4 === 0;
}

/** Reads a base64 file strictly (whitespace allowed around it): a corrupt file must not decode to garbage. */
export function readBase64File(file: string, what: string): Buffer {
  return decodeBase64(readFileSync(file, 'utf8'), `${what} file ${file}`);
}

/** The launch inputs QEMU would take: GODH certificate and session blob. */
export function readLaunchSession(godhFile: string, sessionFile: string): { godh: Buffer; session: Buffer } {
  return { godh: readBase64File(godhFile, 'GODH'), session: readBase64File(sessionFile, 'session') };
}

export function readTransportKeys(tekFile: string, tikFile: string): TransportKeys {
  const tek = readFileSync(tekFile);
  const tik = readFileSync(tikFile);
  if (tek.length !== 16 || tik.length !== 16) throw new Error(`TEK (${tekFile}) and TIK (${tikFile}) must be 16 bytes each`);
  return { tek, tik };
}

/** sevctl's convention for binary arguments: an existing path is read, anything else is base64. */
export function pathOrBase64(value: string, what: string): Buffer {
  if (existsSync(value)) return readFileSync(value);
  if (!isBase64(value)) throw new Error(`${what} is neither an existing file nor base64`);
  return Buffer.from(value, 'base64');
}

export function readSecretPacket(headerFile: string, payloadFile: string): SecretPacket {
  return { header: readFileSync(headerFile), payload: readFileSync(payloadFile) };
}

/** Writes each file whole (temporary name, then rename), payload first: a VMM waiting for the header sees a complete packet. */
export function writeSecretPacket(headerFile: string, payloadFile: string, packet: SecretPacket): void {
  for (const [file, bytes] of [
    [payloadFile, packet.payload],
    [headerFile, packet.header],
  ] as const) {
    writeFileSync(`${file}.partial`, bytes);
    renameSync(`${file}.partial`, file);
  }
}
