// The lab's result channel: what the guest agent writes on the lab's second serial port and the
// host parses. A serial line is a tty (the guest may rewrite `\n` as `\r\n`) and shares nothing
// with the kernel log on the first port; every record is one text line whose payload is base64, so
// command output of any bytes survives, and anything that is not a record (noise) is ignored.
//
//   @@lab start <i>                 command i began
//   @@lab out <i> <base64>          a chunk of its stdout
//   @@lab err <i> <base64>          a chunk of its stderr
//   @@lab exit <i> <status> <sig>   it ended: exit status, or `-` and the signal name (`SIGKILL`)
//   @@lab done                      every command has run; the guest powers off next
//   @@lab fail <base64>             the agent itself failed (bad plan, spawn error)

export const RECORD_PREFIX = '@@lab ';

/** What the host asks the guest to run, written to the initramfs as /lab/plan.json. */
export interface LabPlan {
  readonly commands: readonly PlannedCommand[];
}

export interface PlannedCommand {
  /** Program and arguments, run without a shell. */
  readonly argv: readonly string[];
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  /**
   * Silence (no output) after which the agent reports what every process in the lab is waiting on and
   * kills the command, so a stuck command ends with a diagnosis instead of the whole lab's timeout.
   */
  readonly idleTimeoutMs?: number;
}

export type LabRecord =
  | { kind: 'start'; index: number }
  | { kind: 'out' | 'err'; index: number; data: Buffer }
  | { kind: 'exit'; index: number; status: number | null; signal: string | null }
  | { kind: 'done' }
  | { kind: 'fail'; message: string };

export function encodeRecord(record: LabRecord): string {
  const b64 = (data: Buffer | string): string => Buffer.from(data).toString('base64');
  switch (record.kind) {
    case 'start':
      return `${RECORD_PREFIX}start ${record.index}\n`;
    case 'out':
    case 'err':
      return `${RECORD_PREFIX}${record.kind} ${record.index} ${b64(record.data)}\n`;
    case 'exit':
      return `${RECORD_PREFIX}exit ${record.index} ${record.status ?? '-'} ${record.signal ?? '-'}\n`;
    case 'done':
      return `${RECORD_PREFIX}done\n`;
    case 'fail':
      return `${RECORD_PREFIX}fail ${b64(record.message)}\n`;
  }
}

const INDEX = /^\d{1,6}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Parses one line; undefined for anything that is not a well-formed record. */
export function decodeRecord(line: string): LabRecord | undefined {
  const text = line.replace(/\r+$/, '');
  if (!text.startsWith(RECORD_PREFIX)) return undefined;
  const [kind, ...rest] = text.slice(RECORD_PREFIX.length).split(' ');
  const index = rest[0] !== undefined && INDEX.test(rest[0]) ? Number(rest[0]) : undefined;
  switch (kind) {
    case 'start':
      return index !== undefined && rest.length === 1 ? { kind, index } : undefined;
    case 'out':
    case 'err': {
      const payload = rest[1] ?? '';
      return index !== undefined && rest.length === 2 && BASE64.test(payload) ? { kind, index, data: Buffer.from(payload, 'base64') } : undefined;
    }
    case 'exit': {
      const [, status, signal] = rest;
      if (index === undefined || rest.length !== 3 || status === undefined || signal === undefined) return undefined;
      if (status !== '-' && !(/^\d{1,3}$/.test(status) && Number(status) <= 255)) return undefined;
      return { kind, index, status: status === '-' ? null : Number(status), signal: signal === '-' ? null : signal };
    }
    case 'done':
      return rest.length === 0 ? { kind } : undefined;
    case 'fail':
      return rest.length === 1 && BASE64.test(rest[0] ?? '') ? { kind, message: Buffer.from(rest[0] ?? '', 'base64').toString() } : undefined;
    default:
      return undefined;
  }
}

/** Splits a byte stream into lines and yields the records among them. */
export class RecordParser {
  private pending = '';

  constructor(private readonly onRecord: (record: LabRecord) => void) {}

  push(chunk: Buffer | string): void {
    const lines = (this.pending + chunk.toString('latin1')).split('\n');
    this.pending = lines.pop() ?? '';
    for (const line of lines) {
      const record = decodeRecord(line);
      if (record !== undefined) this.onRecord(record);
    }
  }
}
