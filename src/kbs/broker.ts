// The key broker's decisions, apart from HTTP: registration, then per launch auth -> attest -> key.
//
//   auth    the platform's chain must verify up to a trust anchor; the broker makes the launch session for its
//           PDH under the registered policy (its own TEK/TIK, which never leave it) and answers with what
//           LAUNCH_START takes. The session is bound to the workload and expires.
//   attest  MEASURE must be HMAC(TIK, 0x04 || api || build || policy || registered LD || MNONCE): the launch
//           ran the registered image under the registered policy on the platform the session was made for.
//   key     the passphrase, zero-padded to 512 bytes, as a LAUNCH_SECRET packet under the TEK/TIK and bound
//           to that MEASURE. The session is then spent.
// Each step is accepted once and in order; any refusal ends the session, so a peer cannot probe with it.
import { launchSecret } from './passphrase.js';
import { randomBytes, randomUUID, timingSafeEqual, createHash } from 'node:crypto';
import { verifyMeasurement, type FirmwareBuild, type Measurement } from '../sev/measurement.js';
import { decodePolicy } from '../sev/policy.js';
import { buildSecretPacket, type SecretPacket } from '../sev/secret.js';
import { createSession, type TransportKeys } from '../sev/session.js';
import { sessionTag, type AuditLog, type Step } from './audit.js';
import type { WorkloadStore } from './store.js';
import type { TrustStore } from './trust.js';
import { parseAttest, parseAuth, parseChain, parseRegistration, WireError, type LaunchSession } from './wire.js';

/** A refused request: the HTTP status, a stable machine-readable reason and a one-line detail. */
export class KbsRefusal extends Error {
  override readonly name = 'KbsRefusal';
  constructor(
    readonly status: number,
    readonly reason: string,
    readonly detail: string,
  ) {
    super(`${reason}: ${detail}`);
  }
}

interface Session {
  workloadId: string;
  policy: number;
  build: FirmwareBuild;
  keys: TransportKeys;
  launchDigest: Buffer;
  passphrase: string;
  expires: number;
  state: 'started' | 'attested' | 'spent';
  measure?: Uint8Array;
}

export interface BrokerOptions {
  store: WorkloadStore;
  trust: TrustStore;
  audit: AuditLog;
  /** The admin token's SHA-256 (compared in constant time; the token itself is not kept). */
  adminTokenDigest: Buffer;
  sessionTtlMs?: number;
  maxSessions?: number;
  now?: () => number;
}

export const DEFAULT_SESSION_TTL_MS = 5 * 60_000;
const DEFAULT_MAX_SESSIONS = 10_000;

export function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

export class Broker {
  // Insertion order is expiry order (one TTL for all), so expired sessions are swept from the front.
  private readonly sessions = new Map<string, Session>();
  private readonly ttl: number;
  private readonly maxSessions: number;
  private readonly now: () => number;

  constructor(private readonly o: BrokerOptions) {
    this.ttl = o.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
    this.maxSessions = o.maxSessions ?? DEFAULT_MAX_SESSIONS;
    this.now = o.now ?? Date.now;
  }

  private refuse(remote: string, step: Step, status: number, reason: string, detail: string, workload?: string, sessionId?: string): never {
    this.o.audit.record({ remote, step, workload, session: sessionId && sessionTag(sessionId), verdict: 'refused', reason, detail });
    throw new KbsRefusal(status, reason, detail);
  }

  private parsed<T>(remote: string, step: Step, parse: () => T, sessionId?: string): T {
    try {
      return parse();
    } catch (e) {
      if (e instanceof WireError) {
        if (sessionId) this.spend(sessionId);
        this.refuse(remote, step, 400, 'malformed', e.message, undefined, sessionId);
      }
      throw e;
    }
  }

  /** Records a request refused before it reached a step (HTTP-level: size, method, path, JSON). */
  refuseRequest(remote: string, status: number, reason: string, detail: string): never {
    this.refuse(remote, 'request', status, reason, detail);
  }

  async register(remote: string, authorization: string | undefined, body: unknown): Promise<void> {
    const token = /^Bearer (.+)$/.exec(authorization ?? '')?.[1];
    if (token === undefined || !timingSafeEqual(tokenDigest(token), this.o.adminTokenDigest)) {
      this.refuse(remote, 'register', 401, 'unauthorized', token === undefined ? 'no Bearer token' : 'wrong admin token');
    }
    const r = this.parsed(remote, 'register', () => parseRegistration(body));
    await this.o.store.put(r);
    this.o.audit.record({
      remote,
      step: 'register',
      workload: r.workloadId,
      verdict: 'granted',
      reason: 'registered',
      detail: `policy 0x${r.policy.toString(16)}, launch digest ${r.launchDigest.toString('hex')}`,
    });
  }

  private sweep(): void {
    const now = this.now();
    for (const [id, s] of this.sessions) {
      if (s.expires > now) break;
      this.sessions.delete(id);
    }
  }

  async auth(remote: string, body: unknown): Promise<{ sessionId: string; session: LaunchSession; stringForm: boolean }> {
    const req = this.parsed(remote, 'auth', () => parseAuth(body));
    const w = req.workloadId;
    const registration = await this.o.store.get(w);
    if (!registration) this.refuse(remote, 'auth', 404, 'unknown-workload', `workload "${w}" is not registered`, w);
    const verdict = this.o.trust.verify(req.chainBytes, () => this.parsed(remote, 'auth', () => parseChain(req.chainBytes)));
    if (!verdict.ok) this.refuse(remote, 'auth', 403, verdict.reason, verdict.detail, w);
    const p = decodePolicy(registration.policy);
    const fw = req.build;
    if (p.minApiMajor > fw.apiMajor || (p.minApiMajor === fw.apiMajor && p.minApiMinor > fw.apiMinor)) {
      this.refuse(
        remote,
        'auth',
        403,
        'policy-unmet',
        `the policy requires firmware API ${p.minApiMajor}.${p.minApiMinor}, the platform reports ${fw.apiMajor}.${fw.apiMinor}`,
        w,
      );
    }
    this.sweep();
    if (this.sessions.size >= this.maxSessions) this.refuse(remote, 'auth', 503, 'busy', `${this.sessions.size} sessions open`, w);
    const owner = createSession(verdict.pdh, registration.policy);
    const sessionId = randomUUID().replaceAll('-', '');
    this.sessions.set(sessionId, {
      workloadId: w,
      policy: registration.policy,
      build: fw,
      keys: owner.keys,
      launchDigest: registration.launchDigest,
      passphrase: registration.passphrase,
      expires: this.now() + this.ttl,
      state: 'started',
    });
    this.o.audit.record({
      remote,
      step: 'auth',
      workload: w,
      session: sessionTag(sessionId),
      verdict: 'granted',
      reason: 'session',
      detail: `platform anchored at ${verdict.anchor.source}`,
    });
    return { sessionId, session: { policy: registration.policy, godh: Buffer.from(owner.godh.bytes), session: owner.session }, stringForm: req.stringForm };
  }

  private spend(sessionId: string): void {
    const s = this.sessions.get(sessionId);
    if (!s) return;
    s.state = 'spent';
    s.keys = { tek: Buffer.alloc(16), tik: Buffer.alloc(16) };
    s.passphrase = '';
  }

  /** The session a cookie names, in the state the step needs; anything else is refused and ends it. */
  private sessionFor(remote: string, step: Step, sessionId: string | undefined, needed: Session['state']): Session {
    if (sessionId === undefined) this.refuse(remote, step, 401, 'no-session', 'no session_id cookie (auth first)');
    const s = this.sessions.get(sessionId);
    if (!s) this.refuse(remote, step, 401, 'unknown-session', 'no such session (never made, or expired and forgotten)', undefined, sessionId);
    if (s.expires <= this.now()) {
      this.sessions.delete(sessionId);
      this.refuse(remote, step, 401, 'session-expired', 'the session expired', s.workloadId, sessionId);
    }
    if (s.state !== needed) {
      const [reason, detail] =
        s.state === 'spent'
          ? ['session-used', 'the session was already used or refused']
          : step === 'attest'
            ? ['attest-replayed', 'this session was already attested']
            : ['not-attested', 'key before attest'];
      this.spend(sessionId);
      this.refuse(remote, step, 409, reason, detail, s.workloadId, sessionId);
    }
    return s;
  }

  attest(remote: string, sessionId: string | undefined, body: unknown): void {
    const s = this.sessionFor(remote, 'attest', sessionId, 'started');
    const m: Measurement = this.parsed(remote, 'attest', () => parseAttest(body), sessionId);
    // The schema fixed every length verifyMeasurement needs.
    const ok = verifyMeasurement(m, s.keys.tik, s.build, s.policy, s.launchDigest);
    if (!ok) {
      this.spend(sessionId!);
      this.refuse(
        remote,
        'attest',
        403,
        'measurement-mismatch',
        'the launch measurement is not that of the registered launch digest and policy under this session',
        s.workloadId,
        sessionId,
      );
    }
    s.state = 'attested';
    s.measure = m.measure;
    this.o.audit.record({
      remote,
      step: 'attest',
      workload: s.workloadId,
      session: sessionTag(sessionId!),
      verdict: 'granted',
      reason: 'measurement-verified',
    });
  }

  key(remote: string, sessionId: string | undefined, workloadId: string): SecretPacket {
    const s = this.sessionFor(remote, 'key', sessionId, 'attested');
    if (workloadId !== s.workloadId) {
      this.spend(sessionId!);
      this.refuse(remote, 'key', 403, 'workload-mismatch', `the session is for workload "${s.workloadId}", not "${workloadId}"`, s.workloadId, sessionId);
    }
    const secret = launchSecret(s.passphrase);
    const packet = buildSecretPacket(s.keys, s.measure!, secret, randomBytes(16));
    secret.fill(0);
    this.spend(sessionId!);
    this.o.audit.record({ remote, step: 'key', workload: s.workloadId, session: sessionTag(sessionId!), verdict: 'granted', reason: 'secret-released' });
    return packet;
  }
}
