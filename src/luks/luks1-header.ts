// The LUKS1 header (592 bytes, big-endian; cryptsetup lib/luks1/luks.h), as buildah mkcw writes it through luksy.
import { LuksFormatError, LuksUnsupportedError } from './errors.js';
import { hashSize } from './hash.js';

export const LUKS1_HEADER_SIZE = 592;
const KEYSLOT_ACTIVE = 0x00ac71f3;
const KEYSLOT_DISABLED = 0x0000dead;
const KEYSLOTS = 8;

export interface Luks1Keyslot {
  index: number;
  active: boolean;
  iterations: number;
  salt: Buffer;
  /** Start of the key material, in 512-byte sectors. */
  keyMaterialOffset: number;
  stripes: number;
}

export interface Luks1Header {
  cipherName: string;
  cipherMode: string;
  hashSpec: string;
  /** Start of the data, in 512-byte sectors. */
  payloadOffset: number;
  keyBytes: number;
  mkDigest: Buffer;
  mkDigestSalt: Buffer;
  mkDigestIterations: number;
  uuid: string;
  keyslots: Luks1Keyslot[];
}

function cString(buf: Buffer, offset: number, length: number, what: string): string {
  const field = buf.subarray(offset, offset + length);
  const end = field.indexOf(0);
  if (end < 0) throw new LuksFormatError(`LUKS1 ${what} is not NUL-terminated`);
  return field.toString('latin1', 0, end);
}

/** Whether the first bytes carry the LUKS magic with version 1. */
export const isLuks1 = (bytes: Buffer): boolean =>
  bytes.length >= 8 && bytes.subarray(0, 6).equals(Buffer.from('LUKS\xba\xbe', 'latin1')) && bytes.readUInt16BE(6) === 1;

export function parseLuks1Header(bytes: Buffer): Luks1Header {
  if (bytes.length < LUKS1_HEADER_SIZE || !isLuks1(bytes)) throw new LuksFormatError('not a LUKS1 header');
  const header: Luks1Header = {
    cipherName: cString(bytes, 8, 32, 'cipher name'),
    cipherMode: cString(bytes, 40, 32, 'cipher mode'),
    hashSpec: cString(bytes, 72, 32, 'hash spec'),
    payloadOffset: bytes.readUInt32BE(104),
    keyBytes: bytes.readUInt32BE(108),
    mkDigest: Buffer.from(bytes.subarray(112, 132)),
    mkDigestSalt: Buffer.from(bytes.subarray(132, 164)),
    mkDigestIterations: bytes.readUInt32BE(164),
    uuid: cString(bytes, 168, 40, 'uuid'),
    keyslots: [],
  };
  if (header.cipherName !== 'aes' || header.cipherMode !== 'xts-plain64') {
    throw new LuksUnsupportedError(`LUKS1 cipher ${JSON.stringify(`${header.cipherName}-${header.cipherMode}`.slice(0, 64))} (only aes-xts-plain64)`);
  }
  hashSize(header.hashSpec);
  if (header.keyBytes !== 32 && header.keyBytes !== 64)
    throw new LuksUnsupportedError(`LUKS1 key of ${header.keyBytes} bytes for aes-xts-plain64 (supported: 32, 64)`);
  const headerSectors = Math.ceil(LUKS1_HEADER_SIZE / 512);
  const areas: { index: number; start: number; end: number }[] = [];
  for (let i = 0; i < KEYSLOTS; i++) {
    const at = 208 + i * 48;
    const state = bytes.readUInt32BE(at);
    if (state !== KEYSLOT_ACTIVE && state !== KEYSLOT_DISABLED) throw new LuksFormatError(`LUKS1 keyslot ${i} has state 0x${state.toString(16)}`);
    const slot: Luks1Keyslot = {
      index: i,
      active: state === KEYSLOT_ACTIVE,
      iterations: bytes.readUInt32BE(at + 4),
      salt: Buffer.from(bytes.subarray(at + 8, at + 40)),
      keyMaterialOffset: bytes.readUInt32BE(at + 40),
      stripes: bytes.readUInt32BE(at + 44),
    };
    header.keyslots.push(slot);
    if (!slot.active) continue;
    if (slot.stripes !== 4000) throw new LuksFormatError(`LUKS1 keyslot ${i} has ${slot.stripes} stripes (must be 4000)`);
    const sectors = Math.ceil((header.keyBytes * slot.stripes) / 512);
    areas.push({ index: i, start: slot.keyMaterialOffset, end: slot.keyMaterialOffset + sectors });
  }
  areas.sort((a, b) => a.start - b.start);
  areas.forEach((a, i) => {
    if (a.start < headerSectors) throw new LuksFormatError(`LUKS1 keyslot ${a.index} material overlaps the header`);
    if (header.payloadOffset !== 0 && a.end > header.payloadOffset) throw new LuksFormatError(`LUKS1 keyslot ${a.index} material overlaps the data`);
    const next = areas[i + 1];
    if (next && next.start < a.end) throw new LuksFormatError(`LUKS1 keyslots ${a.index} and ${next.index} overlap`);
  });
  return header;
}
