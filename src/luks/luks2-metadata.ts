// The LUKS2 JSON metadata: parsed from untrusted text into typed records, with the rules cryptsetup's validator
// applies (LUKS2_hdr_validate) plus refusal, by name, of what this implementation does not do.
import { LuksFormatError, LuksUnsupportedError } from './errors.js';
import { hashSize } from './hash.js';
import type { Kdf } from './kdf.js';
import { XTS_PLAIN64 } from './xts.js';

export interface Luks2Keyslot {
  id: string;
  keySize: number;
  stripes: number;
  afHash: string;
  areaOffset: number;
  areaSize: number;
  areaEncryption: string;
  areaKeySize: number;
  kdf: Kdf;
  priority: number | undefined;
}

export interface Luks2Segment {
  id: string;
  offset: number;
  /** Bytes, or 'dynamic' (to the end of the device). */
  size: number | 'dynamic';
  ivTweak: bigint;
  encryption: string;
  sectorSize: number;
}

export interface Luks2Digest {
  id: string;
  keyslots: string[];
  segments: string[];
  hash: string;
  iterations: number;
  salt: Buffer;
  digest: Buffer;
}

export interface Luks2Metadata {
  keyslots: Luks2Keyslot[];
  segments: Luks2Segment[];
  digests: Luks2Digest[];
  tokenTypes: string[];
  jsonSize: number;
  keyslotsSize: number;
  flags: string[];
}

/** cryptsetup's bound on the keyslots area. */
const MAX_KEYSLOTS_SIZE = 128 * 1024 * 1024;
const SECTOR_SIZES = [512, 1024, 2048, 4096];

type Json = Record<string, unknown>;

const fail = (message: string): never => {
  throw new LuksFormatError(`LUKS2 metadata: ${message}`);
};

function object(value: unknown, where: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`${where} is not an object`);
  return value as Json;
}

function string(value: unknown, where: string): string {
  if (typeof value !== 'string') fail(`${where} is not a string`);
  return value as string;
}

function integer(value: unknown, where: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) fail(`${where} is not an integer in ${min}..${max}`);
  return value as number;
}

/** A uint64 written as a decimal string, as LUKS2 requires; bounded to what a file offset can be here. */
function u64(value: unknown, where: string): number {
  const text = string(value, where);
  if (!/^[0-9]{1,20}$/.test(text)) fail(`${where} is not a decimal string`);
  const n = BigInt(text);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${where} is too large`);
  return Number(n);
}

function salt32(value: unknown, where: string): Buffer {
  const text = string(value, where);
  if (!/^[A-Za-z0-9+/]{43}=$/.test(text)) fail(`${where} is not 32 bytes of base64`);
  return Buffer.from(text, 'base64');
}

function entries(value: unknown, where: string): [string, Json][] {
  const map = object(value, where);
  return Object.entries(map).map(([id, v]) => {
    if (!/^[0-9]{1,2}$/.test(id)) fail(`${where} has a member named ${JSON.stringify(id.slice(0, 16))}`);
    return [id, object(v, `${where}.${id}`)];
  });
}

function idList(value: unknown, where: string): string[] {
  if (!Array.isArray(value) || value.length > 64) fail(`${where} is not a list of ids`);
  return (value as unknown[]).map((v) => {
    const id = string(v, where);
    if (!/^[0-9]{1,2}$/.test(id)) fail(`${where} holds ${JSON.stringify(id.slice(0, 16))}`);
    return id;
  });
}

function parseKdf(raw: Json, where: string): Kdf {
  const type = string(raw.type, `${where}.type`);
  const members = Object.keys(raw).length;
  if (type === 'pbkdf2') {
    if (members !== 4) fail(`${where} (pbkdf2) must have exactly type, salt, hash, iterations`);
    const hash = string(raw.hash, `${where}.hash`);
    hashSize(hash);
    return { type, hash, iterations: integer(raw.iterations, `${where}.iterations`, 1), salt: salt32(raw.salt, `${where}.salt`) };
  }
  if (type === 'argon2i' || type === 'argon2id') {
    if (members !== 5) fail(`${where} (${type}) must have exactly type, salt, time, memory, cpus`);
    return {
      type,
      time: integer(raw.time, `${where}.time`, 1),
      memoryKiB: integer(raw.memory, `${where}.memory`, 1),
      cpus: integer(raw.cpus, `${where}.cpus`, 1),
      salt: salt32(raw.salt, `${where}.salt`),
    };
  }
  throw new LuksUnsupportedError(`${where}: kdf type ${JSON.stringify(type.slice(0, 32))}`);
}

function parseKeyslot(id: string, raw: Json): Luks2Keyslot {
  const where = `keyslot ${id}`;
  const type = string(raw.type, `${where}.type`);
  if (type !== 'luks2') throw new LuksUnsupportedError(`${where}: keyslot type ${JSON.stringify(type.slice(0, 32))} (only luks2)`);
  const af = object(raw.af, `${where}.af`);
  if (string(af.type, `${where}.af.type`) !== 'luks1') throw new LuksUnsupportedError(`${where}: af type ${JSON.stringify(String(af.type).slice(0, 32))}`);
  const area = object(raw.area, `${where}.area`);
  if (string(area.type, `${where}.area.type`) !== 'raw')
    throw new LuksUnsupportedError(`${where}: area type ${JSON.stringify(String(area.type).slice(0, 32))}`);
  const encryption = string(area.encryption, `${where}.area.encryption`);
  if (encryption !== XTS_PLAIN64) throw new LuksUnsupportedError(`${where}: cipher ${JSON.stringify(encryption.slice(0, 32))} (only ${XTS_PLAIN64})`);
  const afHash = string(af.hash, `${where}.af.hash`);
  hashSize(afHash);
  const keyslot: Luks2Keyslot = {
    id,
    keySize: integer(raw.key_size, `${where}.key_size`, 1, 512),
    stripes: integer(af.stripes, `${where}.af.stripes`, 1, 4000),
    afHash,
    areaOffset: u64(area.offset, `${where}.area.offset`),
    areaSize: u64(area.size, `${where}.area.size`),
    areaEncryption: encryption,
    areaKeySize: integer(area.key_size, `${where}.area.key_size`, 1, 512),
    kdf: parseKdf(object(raw.kdf, `${where}.kdf`), `${where}.kdf`),
    priority: raw.priority === undefined ? undefined : integer(raw.priority, `${where}.priority`, 0, 2),
  };
  if (keyslot.stripes !== 4000) fail(`${where}.af.stripes must be 4000`);
  if (keyslot.keySize * keyslot.stripes > keyslot.areaSize) fail(`${where}: area is smaller than its key material`);
  return keyslot;
}

function parseSegment(id: string, raw: Json): Luks2Segment {
  const where = `segment ${id}`;
  const type = string(raw.type, `${where}.type`);
  if (type !== 'crypt') throw new LuksUnsupportedError(`${where}: segment type ${JSON.stringify(type.slice(0, 32))} (only crypt)`);
  if (raw.integrity !== undefined) throw new LuksUnsupportedError(`${where}: integrity (authenticated encryption) is not supported`);
  const encryption = string(raw.encryption, `${where}.encryption`);
  if (encryption !== XTS_PLAIN64) throw new LuksUnsupportedError(`${where}: cipher ${JSON.stringify(encryption.slice(0, 32))} (only ${XTS_PLAIN64})`);
  const sectorSize = integer(raw.sector_size, `${where}.sector_size`);
  if (!SECTOR_SIZES.includes(sectorSize)) fail(`${where}.sector_size ${sectorSize} is not 512, 1024, 2048 or 4096`);
  const size = raw.size === 'dynamic' ? 'dynamic' : u64(raw.size, `${where}.size`);
  const segment: Luks2Segment = {
    id,
    offset: u64(raw.offset, `${where}.offset`),
    size,
    ivTweak: BigInt(u64(raw.iv_tweak, `${where}.iv_tweak`)),
    encryption,
    sectorSize,
  };
  // Only reencryption writes a non-zero tweak, and cryptsetup's single-segment activation does not apply it.
  if (segment.ivTweak !== 0n) throw new LuksUnsupportedError(`${where}: iv_tweak ${segment.ivTweak} (only 0)`);
  if (segment.offset % 512 !== 0) fail(`${where}.offset is not a multiple of 512`);
  if (size !== 'dynamic' && size % sectorSize !== 0) fail(`${where}.size is not a multiple of its sector size`);
  return segment;
}

function parseDigest(id: string, raw: Json): Luks2Digest {
  const where = `digest ${id}`;
  const type = string(raw.type, `${where}.type`);
  if (type !== 'pbkdf2') throw new LuksUnsupportedError(`${where}: digest type ${JSON.stringify(type.slice(0, 32))} (only pbkdf2)`);
  const hash = string(raw.hash, `${where}.hash`);
  hashSize(hash);
  const digest = Buffer.from(string(raw.digest, `${where}.digest`), 'base64');
  if (digest.length !== 20 && digest.length !== hashSize(hash)) fail(`${where}.digest has ${digest.length} bytes`);
  return {
    id,
    keyslots: idList(raw.keyslots, `${where}.keyslots`),
    segments: idList(raw.segments, `${where}.segments`),
    hash,
    iterations: integer(raw.iterations, `${where}.iterations`, 1),
    salt: salt32(raw.salt, `${where}.salt`),
    digest,
  };
}

/**
 * Parses and validates the JSON area's text for a header of `hdrSize` bytes. Every keyslot area must lie in the
 * keyslots area without overlap, the first segment must start after it (or at 0 with a detached header), and
 * every keyslot and segment must belong to a digest.
 */
export function parseMetadata(text: string, hdrSize: number): Luks2Metadata {
  if (!text.startsWith('{')) fail('does not start with "{"');
  let raw: Json;
  try {
    raw = object(JSON.parse(text), 'top level');
  } catch (e) {
    if (e instanceof LuksFormatError) throw e;
    return fail('is not valid JSON');
  }
  for (const name of ['keyslots', 'tokens', 'segments', 'digests', 'config']) if (raw[name] === undefined) fail(`has no ${name}`);
  const config = object(raw.config, 'config');
  const jsonSize = u64(config.json_size, 'config.json_size');
  if (jsonSize !== hdrSize - 4096) fail(`config.json_size ${jsonSize} does not match the header size ${hdrSize}`);
  const keyslotsSize = u64(config.keyslots_size, 'config.keyslots_size');
  if (keyslotsSize % 4096 !== 0 || keyslotsSize > MAX_KEYSLOTS_SIZE) fail('config.keyslots_size is not a multiple of 4096 up to 128 MiB');
  const flags = config.flags === undefined ? [] : idLikeStrings(config.flags, 'config.flags');
  if (config.requirements !== undefined) {
    const mandatory = object(config.requirements, 'config.requirements').mandatory;
    const names = mandatory === undefined ? [] : idLikeStrings(mandatory, 'config.requirements.mandatory');
    if (names.length > 0) throw new LuksUnsupportedError(`unknown mandatory requirement ${JSON.stringify(names[0]!.slice(0, 32))}`);
  }
  const keyslots = entries(raw.keyslots, 'keyslots').map(([id, v]) => parseKeyslot(id, v));
  const segments = entries(raw.segments, 'segments').map(([id, v]) => parseSegment(id, v));
  const digests = entries(raw.digests, 'digests').map(([id, v]) => parseDigest(id, v));
  const tokenTypes = entries(raw.tokens, 'tokens').map(([id, v]) => string(v.type, `token ${id}.type`));

  const areaStart = 2 * hdrSize;
  const areaEnd = areaStart + keyslotsSize;
  const areas = keyslots.map((k) => ({ id: k.id, start: k.areaOffset, end: k.areaOffset + k.areaSize })).sort((a, b) => a.start - b.start);
  areas.forEach((a, i) => {
    if (a.start < areaStart || a.end > areaEnd || a.start % 4096 !== 0) fail(`keyslot ${a.id} area lies outside the keyslots area`);
    const next = areas[i + 1];
    if (next && next.start < a.end) fail(`keyslot areas ${a.id} and ${next.id} overlap`);
  });
  for (const s of segments) if (s.offset !== 0 && s.offset < areaEnd) fail(`segment ${s.id} overlaps the header`);
  for (const k of keyslots) {
    const owners = digests.filter((d) => d.keyslots.includes(k.id)).length;
    if (owners !== 1) fail(`keyslot ${k.id} belongs to ${owners} digests`);
  }
  for (const s of segments) if (!digests.some((d) => d.segments.includes(s.id))) fail(`segment ${s.id} belongs to no digest`);
  for (const d of digests) {
    for (const k of d.keyslots) if (!keyslots.some((x) => x.id === k)) fail(`digest ${d.id} names missing keyslot ${k}`);
    for (const s of d.segments) if (!segments.some((x) => x.id === s)) fail(`digest ${d.id} names missing segment ${s}`);
  }
  return { keyslots, segments, digests, tokenTypes, jsonSize, keyslotsSize, flags };
}

function idLikeStrings(value: unknown, where: string): string[] {
  if (!Array.isArray(value) || value.length > 64) fail(`${where} is not a list`);
  return (value as unknown[]).map((v) => string(v, where));
}
