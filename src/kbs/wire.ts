// The KBS v0 wire format (virtee/reference-kbs, kbs-types, libkrun's SEV attestation client), as JSON schemas
// and the conversions between its JSON and the SEV types of src/sev. Byte arrays travel as JSON arrays of
// numbers (serde); SEV policies as {"flags":{"bits":N},"minfw":{"major":M,"minor":m}} (bitflags 1.x).
// kbs-types changed shape over the versions libkrun used: `extra-params` and `tee-evidence` were JSON-encoded
// strings up to 0.5.x and objects from 0.7; `tee-pubkey` took four forms. All are accepted; `tee-pubkey` means
// nothing for SEV (the secret is bound to the launch by the TIK) and is ignored.
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { CaCertificate } from '../sev/ca-certificate.js';
import { parseFullChain, type FullChain } from '../sev/chain.js';
import type { FirmwareBuild, Measurement } from '../sev/measurement.js';
import { decodePolicy } from '../sev/policy.js';
import type { SecretPacket } from '../sev/secret.js';
import { parseSecretHeader, encodeSecretHeader } from '../sev/secret.js';
import { parseSession } from '../sev/session.js';
import { SEV_CERT_SIZE } from '../sev/sev-certificate.js';

/** The size serde gives an AMD CA certificate on the wire: the union of the Naples and Rome layouts. */
export const CA_CERT_WIRE_SIZE = 1600;
/** era-B secret: the passphrase zero-padded to this (what libkrun injects at CMDLINE_START and the guest reads). */
export const SECRET_SIZE = 512;
export const WORKLOAD_ID_MAX = 256;

export const KBS_PREFIX = '/kbs/v0';
/** The largest request: an auth carries four 2084-byte and two 1600-byte certificates as JSON numbers (~50 KB). */
export const MAX_BODY_BYTES = 256 * 1024;
export const SESSION_COOKIE = 'session_id';

/** The session_id cookie among the request's cookies (libkrun sends exactly `session_id=<id>`). */
export function sessionCookie(header: string | undefined): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) {
      const value = part.slice(eq + 1).trim();
      return /^[0-9a-f]{32}$/.test(value) ? value : undefined;
    }
  }
  return undefined;
}

const byteArray = (min: number, max = min) => ({ type: 'array', minItems: min, maxItems: max, items: { type: 'integer', minimum: 0, maximum: 255 } });
const u8 = { type: 'integer', minimum: 0, maximum: 255 };
const workloadId = { type: 'string', minLength: 1, maxLength: WORKLOAD_ID_MAX, pattern: '^[\\x21-\\x7e]+$' };

export interface PolicyJson {
  flags: { bits: number };
  minfw: { major: number; minor: number };
}

const policySchema = {
  type: 'object',
  required: ['flags', 'minfw'],
  properties: {
    flags: { type: 'object', required: ['bits'], properties: { bits: { type: 'integer', minimum: 0, maximum: 0xffff } } },
    minfw: { type: 'object', required: ['major', 'minor'], properties: { major: u8, minor: u8 } },
  },
};

const registerSchema = {
  type: 'object',
  required: ['workload_id', 'launch_measurement', 'passphrase'],
  properties: {
    workload_id: workloadId,
    launch_measurement: { type: 'string', pattern: '^[0-9a-fA-F]{64}$' },
    // reference-kbs stores tee_config as the policy's JSON text; an object is the same policy unencoded.
    tee_config: { oneOf: [{ type: 'string', maxLength: 4096 }, policySchema] },
    // The guest reads the secret up to its first NUL (strnlen), so a NUL would cut the passphrase short.
    passphrase: { type: 'string', minLength: 1, maxLength: SECRET_SIZE, pattern: '^[^\\u0000]+$' },
  },
};

const sevRequestSchema = {
  type: 'object',
  required: ['build', 'chain', 'workload_id'],
  properties: {
    build: {
      type: 'object',
      required: ['version', 'build'],
      properties: { version: { type: 'object', required: ['major', 'minor'], properties: { major: u8, minor: u8 } }, build: u8 },
    },
    chain: {
      type: 'object',
      required: ['ca', 'sev'],
      properties: {
        ca: { type: 'object', required: ['ask', 'ark'], properties: { ask: byteArray(64, CA_CERT_WIRE_SIZE), ark: byteArray(64, CA_CERT_WIRE_SIZE) } },
        sev: {
          type: 'object',
          required: ['pdh', 'pek', 'oca', 'cek'],
          properties: { pdh: byteArray(SEV_CERT_SIZE), pek: byteArray(SEV_CERT_SIZE), oca: byteArray(SEV_CERT_SIZE), cek: byteArray(SEV_CERT_SIZE) },
        },
      },
    },
    workload_id: workloadId,
  },
};

const authSchema = {
  type: 'object',
  required: ['version', 'tee', 'extra-params'],
  properties: {
    version: { type: 'string', maxLength: 32 },
    tee: { const: 'sev' },
    'extra-params': { type: ['string', 'object'] },
  },
};

const evidenceSchema = {
  type: 'object',
  required: ['measure', 'mnonce'],
  properties: { measure: byteArray(32), mnonce: byteArray(16) },
};

const attestSchema = {
  type: 'object',
  required: ['tee-evidence'],
  properties: { 'tee-evidence': { type: ['string', 'object'] } },
};

const sessionJson = {
  type: 'object',
  required: ['nonce', 'wrap_tk', 'wrap_iv', 'wrap_mac', 'policy_mac'],
  properties: { nonce: byteArray(16), wrap_tk: byteArray(32), wrap_iv: byteArray(16), wrap_mac: byteArray(32), policy_mac: byteArray(32) },
};

const challengeSchema = {
  type: 'object',
  required: ['nonce', 'extra-params'],
  properties: { nonce: { type: 'string', maxLength: 64 }, 'extra-params': { type: ['string', 'object'] } },
};

const startSchema = {
  type: 'object',
  required: ['id', 'start'],
  properties: {
    id: { type: 'string', maxLength: 64 },
    start: {
      type: 'object',
      required: ['policy', 'cert', 'session'],
      properties: { policy: policySchema, cert: byteArray(SEV_CERT_SIZE), session: sessionJson },
    },
  },
};

const secretSchema = {
  type: 'object',
  required: ['header', 'ciphertext'],
  properties: {
    header: {
      type: 'object',
      required: ['flags', 'iv', 'mac'],
      properties: {
        flags: { type: 'object', required: ['bits'], properties: { bits: { type: 'integer', minimum: 0, maximum: 0xffff_ffff } } },
        iv: byteArray(16),
        mac: byteArray(32),
      },
    },
    ciphertext: byteArray(1, 4096),
  },
};

const ajv = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true });

/** A request or answer that does not have the documented shape; `field` is its JSON path. */
export class WireError extends Error {
  override readonly name = 'WireError';
  constructor(
    readonly field: string,
    detail: string,
  ) {
    super(`${field}: ${detail}`);
  }
}

function describe(what: string, error: ErrorObject | undefined): WireError {
  if (!error) return new WireError(what, 'invalid');
  const path = error.instancePath.replace(/^\//, '').replace(/\//g, '.');
  const missing = error.keyword === 'required' ? `.${String(error.params.missingProperty)}` : '';
  const field = `${what}${path ? `.${path}` : ''}${missing}`;
  return new WireError(field, missing ? 'missing' : (error.message ?? 'invalid'));
}

function checker<T>(what: string, schema: object): (value: unknown) => T {
  const validate: ValidateFunction = ajv.compile(schema);
  return (value) => {
    if (!validate(value)) throw describe(what, validate.errors?.[0] ?? undefined);
    return value as T;
  };
}

/** A field that is JSON either as itself or as a JSON-encoded string (kbs-types before 0.7). */
function embedded(value: unknown, field: string): { value: unknown; asString: boolean } {
  if (typeof value !== 'string') return { value, asString: false };
  try {
    return { value: JSON.parse(value) as unknown, asString: true };
  } catch {
    throw new WireError(field, 'is a string but not JSON');
  }
}

export interface RegisterJson {
  workload_id: string;
  launch_measurement: string;
  tee_config?: string | PolicyJson;
  passphrase: string;
}
interface SevRequestJson {
  build: { version: { major: number; minor: number }; build: number };
  chain: { ca: { ask: number[]; ark: number[] }; sev: { pdh: number[]; pek: number[]; oca: number[]; cek: number[] } };
  workload_id: string;
}
interface EvidenceJson {
  measure: number[];
  mnonce: number[];
}
interface SessionJson {
  nonce: number[];
  wrap_tk: number[];
  wrap_iv: number[];
  wrap_mac: number[];
  policy_mac: number[];
}
interface StartJson {
  id: string;
  start: { policy: PolicyJson; cert: number[]; session: SessionJson };
}
interface SecretJson {
  header: { flags: { bits: number }; iv: number[]; mac: number[] };
  ciphertext: number[];
}

const checkRegister = checker<RegisterJson>('body', registerSchema);
const checkPolicy = checker<PolicyJson>('tee_config', policySchema);
const checkAuth = checker<{ 'extra-params': unknown }>('body', authSchema);
const checkSevRequest = checker<SevRequestJson>('extra-params', sevRequestSchema);
const checkAttest = checker<{ 'tee-evidence': unknown }>('body', attestSchema);
const checkEvidence = checker<EvidenceJson>('tee-evidence', evidenceSchema);
const checkChallenge = checker<{ nonce: string; 'extra-params': unknown }>('auth answer', challengeSchema);
const checkStart = checker<StartJson>('auth answer.extra-params', startSchema);
const checkSecret = checker<SecretJson>('key answer', secretSchema);

// --- policies

export function policyToJson(policy: number): PolicyJson {
  decodePolicy(policy);
  return { flags: { bits: policy & 0xffff }, minfw: { major: (policy >>> 16) & 0xff, minor: (policy >>> 24) & 0xff } };
}

export function policyFromJson(p: PolicyJson, field = 'tee_config'): number {
  const policy = (p.flags.bits | (p.minfw.major << 16) | (p.minfw.minor << 24)) >>> 0;
  try {
    decodePolicy(policy);
  } catch (e) {
    throw new WireError(`${field}.flags.bits`, (e as Error).message);
  }
  return policy;
}

// --- register_workload

export interface Registration {
  workloadId: string;
  launchDigest: Buffer;
  policy: number;
  passphrase: string;
}

export function parseRegistration(body: unknown): Registration {
  const r = checkRegister(body);
  const bytes = Buffer.byteLength(r.passphrase);
  if (bytes > SECRET_SIZE) throw new WireError('body.passphrase', `${bytes} bytes in UTF-8, the secret holds ${SECRET_SIZE}`);
  // reference-kbs reads a missing tee_config as policy 0.
  const policy = r.tee_config === undefined ? 0 : policyFromJson(checkPolicy(embedded(r.tee_config, 'tee_config').value));
  return { workloadId: r.workload_id, launchDigest: Buffer.from(r.launch_measurement, 'hex'), policy, passphrase: r.passphrase };
}

export function registrationJson(r: Registration): RegisterJson {
  return {
    workload_id: r.workloadId,
    launch_measurement: r.launchDigest.toString('hex'),
    tee_config: JSON.stringify(policyToJson(r.policy)),
    passphrase: r.passphrase,
  };
}

// --- auth

export interface AuthRequest {
  workloadId: string;
  build: FirmwareBuild;
  /** The platform's chain as sent, PDH || PEK || OCA || CEK || ASK || ARK (CA certificates unpadded); parseChain reads it. */
  chainBytes: Buffer;
  /** The client spoke kbs-types before 0.7 (extra-params as a JSON string): answer in kind. */
  stringForm: boolean;
}

/** A CA certificate as serde sends it: its declared size, zero-padded up to 1600 bytes. */
function caFromWire(bytes: number[], field: string): Buffer {
  const b = Buffer.from(bytes);
  let size: number;
  try {
    size = CaCertificate.declaredSize(b, field);
  } catch (e) {
    throw new WireError(field, (e as Error).message);
  }
  if (size > b.length) throw new WireError(field, `${b.length} bytes, the certificate declares ${size}`);
  if (b.subarray(size).some((x) => x !== 0)) throw new WireError(field, `non-zero bytes after the ${size}-byte certificate`);
  return b.subarray(0, size);
}

export function caToWire(cert: CaCertificate): number[] {
  const out = Buffer.alloc(Math.max(CA_CERT_WIRE_SIZE, cert.bytes.length));
  out.set(cert.bytes);
  return [...out];
}

export function parseAuth(body: unknown): AuthRequest {
  const { 'extra-params': raw } = checkAuth(body);
  const { value, asString } = embedded(raw, 'extra-params');
  const r = checkSevRequest(value);
  const s = r.chain.sev;
  const chainBytes = Buffer.concat([
    ...[s.pdh, s.pek, s.oca, s.cek].map((c) => Buffer.from(c)),
    caFromWire(r.chain.ca.ask, 'extra-params.chain.ca.ask'),
    caFromWire(r.chain.ca.ark, 'extra-params.chain.ca.ark'),
  ]);
  return {
    workloadId: r.workload_id,
    build: { apiMajor: r.build.version.major, apiMinor: r.build.version.minor, build: r.build.build },
    chainBytes,
    stringForm: asString,
  };
}

/** The certificates of an auth request's chain (parsing checks each one's format and public key). */
export function parseChain(chainBytes: Buffer): FullChain {
  try {
    return parseFullChain(chainBytes);
  } catch (e) {
    throw new WireError('extra-params.chain', (e as Error).message);
  }
}

export function authJson(workloadId: string, build: FirmwareBuild, chain: FullChain, stringForm: boolean): object {
  const extra: SevRequestJson = {
    build: { version: { major: build.apiMajor, minor: build.apiMinor }, build: build.build },
    chain: {
      ca: { ask: caToWire(chain.ask), ark: caToWire(chain.ark) },
      sev: { pdh: [...chain.pdh.bytes], pek: [...chain.pek.bytes], oca: [...chain.oca.bytes], cek: [...chain.cek.bytes] },
    },
    workload_id: workloadId,
  };
  return { version: '0.0.0', tee: 'sev', 'extra-params': stringForm ? JSON.stringify(extra) : extra };
}

/** What LAUNCH_START takes, as the KBS made it: the policy, the KBS's GODH certificate and the session blob. */
export interface LaunchSession {
  policy: number;
  godh: Buffer;
  session: Buffer;
}

export function challengeJson(id: string, s: LaunchSession, stringForm: boolean): object {
  const blob = parseSession(s.session);
  const extra: StartJson = {
    id,
    start: {
      policy: policyToJson(s.policy),
      cert: [...s.godh],
      session: { nonce: [...blob.nonce], wrap_tk: [...blob.wrapTk], wrap_iv: [...blob.wrapIv], wrap_mac: [...blob.wrapMac], policy_mac: [...blob.policyMac] },
    },
  };
  return { nonce: id, 'extra-params': stringForm ? JSON.stringify(extra) : extra };
}

export function parseChallenge(body: unknown): LaunchSession {
  const c = checkChallenge(body);
  const { start } = checkStart(embedded(c['extra-params'], 'auth answer.extra-params').value);
  const s = start.session;
  return {
    policy: policyFromJson(start.policy, 'auth answer.extra-params.start.policy'),
    godh: Buffer.from(start.cert),
    session: Buffer.concat([s.nonce, s.wrap_tk, s.wrap_iv, s.wrap_mac, s.policy_mac].map((f) => Buffer.from(f))),
  };
}

// --- attest

export function parseAttest(body: unknown): Measurement {
  const { 'tee-evidence': raw } = checkAttest(body);
  const e = checkEvidence(embedded(raw, 'tee-evidence').value);
  return { measure: Uint8Array.from(e.measure), mnonce: Uint8Array.from(e.mnonce) };
}

export function attestJson(m: Measurement, stringForm: boolean): object {
  const evidence: EvidenceJson = { measure: [...m.measure], mnonce: [...m.mnonce] };
  // libkrun sends an empty key for SEV; the form follows the kbs-types generation.
  const pubkey = stringForm ? { kty: '', alg: '', k: '' } : { kty: '', alg: '', n: '', e: '' };
  return { 'tee-pubkey': pubkey, 'tee-evidence': stringForm ? JSON.stringify(evidence) : evidence };
}

// --- key

export function secretJson(packet: SecretPacket): SecretJson {
  const h = parseSecretHeader(packet.header);
  return { header: { flags: { bits: h.flags }, iv: [...h.iv], mac: [...h.mac] }, ciphertext: [...packet.payload] };
}

export function parseSecret(body: unknown): SecretPacket {
  const s = checkSecret(body);
  return {
    header: encodeSecretHeader({ flags: s.header.flags.bits, iv: Uint8Array.from(s.header.iv), mac: Uint8Array.from(s.header.mac) }),
    payload: Buffer.from(s.ciphertext),
  };
}
