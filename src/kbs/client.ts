// The key broker's client, for the VMM and the guest owner's tools, one function per step:
//   register()                       the owner registers a workload (admin token)
//   session = await kbs.auth(...)    the platform's chain and build -> what LAUNCH_START takes (policy, GODH, session)
//   await session.attest(measure)   after LAUNCH_MEASURE: MEASURE || MNONCE
//   packet = await session.key()    the LAUNCH_SECRET packet (header, payload) to inject
//   (secretFor(measurement) does both, as measuredLaunch's `secret` callback wants)
// The session cookie lives in the KbsSession object. Every failure is a KbsClientError naming the step, the
// HTTP status and the server's reason.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { FullChain } from '../sev/chain.js';
import { parseMeasurement, type FirmwareBuild } from '../sev/measurement.js';
import type { SecretPacket } from '../sev/secret.js';
import { errorMessage } from '../sys/error-message.js';
import {
  KBS_PREFIX,
  MAX_BODY_BYTES,
  attestJson,
  authJson,
  parseChallenge,
  parseSecret,
  registrationJson,
  sessionCookie,
  type LaunchSession,
  type Registration,
} from './wire.js';

export type KbsStep = 'register' | 'auth' | 'attest' | 'key';

export class KbsClientError extends Error {
  override readonly name = 'KbsClientError';
  constructor(
    readonly step: KbsStep,
    /** The HTTP status, or undefined when no answer came (connection, TLS, timeout). */
    readonly status: number | undefined,
    /** The server's reason (e.g. "measurement-mismatch"), or what went wrong locally. */
    readonly reason: string,
    detail: string,
  ) {
    super(`kbs ${step}: ${status === undefined ? '' : `HTTP ${status} `}${reason}${detail ? `: ${detail}` : ''}`);
  }
}

export interface KbsClientOptions {
  /** http://host:port or https://host:port (the KBS v0 paths are appended). */
  url: string;
  /** PEM CA certificate(s) to trust for https instead of the system's. */
  ca?: Buffer;
  timeoutMs?: number;
}

interface Answer {
  status: number;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

export class KbsClient {
  private readonly base: URL;

  constructor(private readonly o: KbsClientOptions) {
    this.base = new URL(o.url);
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') throw new Error(`KBS URL ${o.url}: not http or https`);
  }

  /** One request; answers what the server said, or throws KbsClientError when nothing usable came back. */
  send(step: KbsStep, method: 'GET' | 'POST', path: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
    const url = new URL(`${this.base.pathname.replace(/\/$/, '')}${KBS_PREFIX}${path}`, this.base);
    const text = body === undefined ? undefined : JSON.stringify(body);
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          ca: this.o.ca,
          timeout: this.o.timeoutMs ?? 30_000,
          headers: {
            accept: 'application/json',
            ...(text === undefined ? {} : { 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(text)) }),
            ...headers,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_BODY_BYTES) {
              req.destroy();
              reject(new KbsClientError(step, res.statusCode, 'answer-too-large', `more than ${MAX_BODY_BYTES} bytes`));
            } else {
              chunks.push(c);
            }
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', (e) => reject(new KbsClientError(step, res.statusCode, 'connection', errorMessage(e))));
        },
      );
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', (e) => reject(new KbsClientError(step, undefined, 'connection', errorMessage(e))));
      req.end(text);
    });
  }

  /** Throws the server's refusal as a KbsClientError; answers the JSON body of a success (undefined if empty). */
  static expectOk(step: KbsStep, a: Answer): unknown {
    let json: unknown;
    try {
      json = a.body.length === 0 ? undefined : JSON.parse(a.body.toString('utf8'));
    } catch {
      throw new KbsClientError(step, a.status, a.status >= 200 && a.status < 300 ? 'bad-answer' : 'refused', 'the answer is not JSON');
    }
    if (a.status >= 200 && a.status < 300) return json;
    const refusal = json as { error?: unknown; detail?: unknown } | undefined;
    const reason = typeof refusal?.error === 'string' ? refusal.error : 'refused';
    throw new KbsClientError(step, a.status, reason, typeof refusal?.detail === 'string' ? refusal.detail.slice(0, 500) : '');
  }

  /** The guest owner registers (or replaces) a workload: its launch digest, policy and passphrase. */
  async register(adminToken: string, r: Registration): Promise<void> {
    KbsClient.expectOk('register', await this.send('register', 'POST', '/register_workload', registrationJson(r), { authorization: `Bearer ${adminToken}` }));
  }

  /**
   * Starts a launch: sends the platform's chain and firmware build, answers the session the KBS made for this
   * platform (LAUNCH_START's policy, GODH certificate and session blob) and the handle for the next steps.
   * `stringForm` speaks kbs-types before 0.7 (embedded JSON strings), as libkrun up to v1.9.3 did.
   */
  async auth(workloadId: string, build: FirmwareBuild, chain: FullChain, stringForm = false): Promise<KbsSession> {
    const a = await this.send('auth', 'POST', '/auth', authJson(workloadId, build, chain, stringForm));
    const json = KbsClient.expectOk('auth', a);
    // libkrun takes the cookie from whichever header carries session_id.
    const cookies = [a.headers['set-cookie'] ?? []].flat();
    const id = cookies.map((c) => sessionCookie(c.split(';')[0])).find((c) => c !== undefined);
    if (!id) throw new KbsClientError('auth', a.status, 'bad-answer', 'no session_id cookie in the answer');
    let launch: LaunchSession;
    try {
      launch = parseChallenge(json);
    } catch (e) {
      throw new KbsClientError('auth', a.status, 'bad-answer', errorMessage(e));
    }
    return new KbsSession(this, workloadId, id, launch, stringForm);
  }
}

/** One launch's session with the KBS: attest once, then fetch the key once. */
export class KbsSession {
  constructor(
    private readonly client: KbsClient,
    readonly workloadId: string,
    private readonly sessionId: string,
    /** For LAUNCH_START. */
    readonly launch: LaunchSession,
    private readonly stringForm: boolean,
  ) {}

  private get cookie(): Record<string, string> {
    return { cookie: `session_id=${this.sessionId}` };
  }

  /** Sends LAUNCH_MEASURE's answer (MEASURE[32] || MNONCE[16]). */
  async attest(measurement: Uint8Array): Promise<void> {
    let m: ReturnType<typeof parseMeasurement>;
    try {
      m = parseMeasurement(measurement);
    } catch (e) {
      throw new KbsClientError('attest', undefined, 'bad-measurement', errorMessage(e));
    }
    KbsClient.expectOk('attest', await this.client.send('attest', 'POST', '/attest', attestJson(m, this.stringForm), this.cookie));
  }

  /** attest then key: a `SecretSource` for src/sev/launch.ts's measuredLaunch (`secret: (m) => session.secretFor(m)`). */
  async secretFor(measurement: Uint8Array): Promise<SecretPacket> {
    await this.attest(measurement);
    return this.key();
  }

  /** The secret packet for LAUNCH_SECRET. */
  async key(): Promise<SecretPacket> {
    const a = await this.client.send('key', 'GET', `/key/${encodeURIComponent(this.workloadId)}`, undefined, this.cookie);
    const json = KbsClient.expectOk('key', a);
    try {
      return parseSecret(json);
    } catch (e) {
      throw new KbsClientError('key', a.status, 'bad-answer', errorMessage(e));
    }
  }
}
