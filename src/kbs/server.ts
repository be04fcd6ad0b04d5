// The key broker's HTTP face (KBS v0 as virtee/reference-kbs serves it and libkrun calls it):
//   POST /kbs/v0/register_workload   (Authorization: Bearer <admin token>)
//   POST /kbs/v0/auth                 sets the session_id cookie
//   POST /kbs/v0/attest               Cookie: session_id=...
//   GET  /kbs/v0/key/{workload_id}    Cookie: session_id=...
// Bodies are bounded (413) before they are buffered; anything not JSON of the documented shape is 400 naming
// the field; other paths 404, other methods 405. A refusal answers {"error": reason, "detail": "..."}.
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { errorMessage } from '../sys/error-message.js';
import { KbsRefusal, type Broker } from './broker.js';
import { KBS_PREFIX, MAX_BODY_BYTES, SESSION_COOKIE, challengeJson, secretJson, sessionCookie } from './wire.js';

export interface KbsServerOptions {
  broker: Broker;
  /** PEM certificate and key: serve HTTPS. */
  tls?: { cert: Buffer; key: Buffer };
}

function send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

function readBody(req: IncomingMessage, refuse: (status: number, reason: string, detail: string) => never): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) refuse(413, 'too-large', `body of ${declared} bytes exceeds ${MAX_BODY_BYTES}`);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        req.resume();
        try {
          refuse(413, 'too-large', `body exceeds ${MAX_BODY_BYTES} bytes`);
        } catch (e) {
          reject(e);
        }
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

const routes: Record<string, string> = {
  [`${KBS_PREFIX}/register_workload`]: 'POST',
  [`${KBS_PREFIX}/auth`]: 'POST',
  [`${KBS_PREFIX}/attest`]: 'POST',
};
const KEY_PREFIX = `${KBS_PREFIX}/key/`;

async function handle(broker: Broker, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const remote = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
  const refuse: (status: number, reason: string, detail: string) => never = (status, reason, detail) => broker.refuseRequest(remote, status, reason, detail);
  const path = (req.url ?? '/').split('?')[0]!;
  const method = path.startsWith(KEY_PREFIX) ? 'GET' : routes[path];
  if (method === undefined) return refuse(404, 'not-found', `no such endpoint ${path.slice(0, 200)}`);
  if (req.method !== method) {
    res.setHeader('allow', method);
    refuse(405, 'method-not-allowed', `${path} takes ${method}, not ${req.method}`);
  }
  if (method === 'GET') {
    let workloadId: string;
    try {
      workloadId = decodeURIComponent(path.slice(KEY_PREFIX.length));
    } catch {
      refuse(400, 'malformed', 'the workload id in the path is not valid percent-encoding');
    }
    send(res, 200, secretJson(broker.key(remote, sessionCookie(req.headers.cookie), workloadId)));
    return;
  }
  const raw = await readBody(req, refuse);
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch {
    refuse(400, 'malformed', 'body: not JSON');
  }
  if (path.endsWith('/register_workload')) {
    await broker.register(remote, req.headers.authorization, body);
    send(res, 200);
  } else if (path.endsWith('/auth')) {
    const { sessionId, session, stringForm } = await broker.auth(remote, body);
    send(res, 200, challengeJson(sessionId, session, stringForm), { 'set-cookie': `${SESSION_COOKIE}=${sessionId}; Path=${KBS_PREFIX}; HttpOnly` });
  } else {
    broker.attest(remote, sessionCookie(req.headers.cookie), body);
    send(res, 200);
  }
}

export function createKbsServer(o: KbsServerOptions): Server {
  const listener = (req: IncomingMessage, res: ServerResponse) => {
    handle(o.broker, req, res).catch((e: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (e instanceof KbsRefusal) {
        // A body left unread would be parsed as the next request; close the connection instead.
        const headers: Record<string, string> = {};
        if (e.status === 413) headers.connection = 'close';
        if (e.reason === 'unauthorized') headers['www-authenticate'] = 'Bearer';
        send(res, e.status, { error: e.reason, detail: e.detail }, headers);
        return;
      }
      // A failure of the broker itself (the store's disk): the request fails, the server stays up.
      process.stderr.write(`ts-vmm kbs: ${errorMessage(e)}\n`);
      send(res, 500, { error: 'internal', detail: 'the key broker could not complete the request' });
    });
  };
  const server = o.tls ? createHttpsServer({ cert: o.tls.cert, key: o.tls.key }, listener) : createHttpServer(listener);
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  return server;
}
