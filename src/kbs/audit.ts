// The key broker's audit log: one JSON line per decision, appended to DIR/audit.log (mode 0600). A record
// names who asked (remote address), the step, the workload, the verdict and the reason. It never holds a
// passphrase, a TEK/TIK or a session id (the cookie is a bearer credential): a session appears as a short
// SHA-256 tag, enough to follow one launch through auth, attest and key.
import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync, constants } from 'node:fs';

export type Step = 'register' | 'auth' | 'attest' | 'key' | 'request';

export interface AuditRecord {
  remote: string;
  step: Step;
  workload?: string;
  /** The session's tag (sessionTag), never its id. */
  session?: string;
  verdict: 'granted' | 'refused';
  /** The machine-readable reason of a refusal, or what was granted. */
  reason: string;
  detail?: string;
}

export function sessionTag(sessionId: string): string {
  return createHash('sha256').update(sessionId).digest('hex').slice(0, 12);
}

export class AuditLog {
  private readonly fd: number;

  /** `simulated`: every record says the platform trust is sev-sim's, not AMD's. */
  constructor(
    file: string,
    private readonly simulated: boolean,
  ) {
    this.fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
  }

  record(r: AuditRecord): void {
    const line = JSON.stringify({ time: new Date().toISOString(), ...r, ...(this.simulated ? { simulated: true } : {}) });
    // One write(2) per line on an O_APPEND file: lines never interleave.
    writeSync(this.fd, `${line}\n`);
  }

  close(): void {
    closeSync(this.fd);
  }
}
