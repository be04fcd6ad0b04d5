// The framing between ts-vmm and its guest agent (src/guest/agent.c): u32 little-endian payload length, u8 type,
// payload. The guest is untrusted, so the decoder bounds every length before buffering anything.

export const FrameType = {
  Ready: 1,
  Stdout: 2,
  Stderr: 3,
  Exit: 4,
  Error: 5,
  /** The process's exec(2) succeeded. */
  Started: 6,
  Start: 16,
  Stdin: 17,
  StdinEof: 18,
  Signal: 19,
  WindowSize: 20,
  Process: 21,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** The signals ts-vmm passes on to the workload (or, before it starts, takes as "do not run"). */
export const FORWARDED_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];

export const HEADER_BYTES = 5;
export const MAX_PAYLOAD = 65536;
/** The agent's bound on a process description (MAX_PROCESS in agent.c). */
export const MAX_PROCESS_BYTES = 8 * 1024 * 1024;

export interface Frame {
  type: number;
  payload: Uint8Array;
}

/** How the workload ended, as the agent saw it in waitpid(2). */
export type ExitStatus = { kind: 'exited'; code: number } | { kind: 'signaled'; signal: number };

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(message: string) {
    super(`guest agent protocol: ${message}`);
  }
}

export function encodeFrame(type: FrameType, payload: Uint8Array = new Uint8Array(0)): Buffer {
  if (payload.length > MAX_PAYLOAD) throw new ProtocolError(`payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  const frame = Buffer.alloc(HEADER_BYTES + payload.length);
  frame.writeUInt32LE(payload.length, 0);
  frame.writeUInt8(type, 4);
  frame.set(payload, HEADER_BYTES);
  return frame;
}

/** Splits data into Stdin frames no larger than MAX_PAYLOAD. */
export function encodeStdin(data: Uint8Array): Buffer[] {
  const frames: Buffer[] = [];
  for (let off = 0; off < data.length; off += MAX_PAYLOAD) {
    frames.push(encodeFrame(FrameType.Stdin, data.subarray(off, off + MAX_PAYLOAD)));
  }
  return frames;
}

/** Words as the agent reads them, each NUL-terminated: in Process frames, or in a words file (`--setup-file`, `--process-file`). */
export function encodeWords(words: readonly string[]): Buffer {
  if (words.some((w) => w.includes('\0'))) throw new ProtocolError('a word for the guest agent contains a NUL byte');
  return Buffer.from(words.map((w) => `${w}\0`).join(''), 'utf8');
}

/**
 * The process description (the agent's process options, `--`, the arguments) as Process frames: the words
 * NUL-terminated, cut into payloads of at most MAX_PAYLOAD. Sent after READY, before START.
 */
export function encodeProcess(words: readonly string[]): Buffer[] {
  const text = encodeWords(words);
  if (text.length > MAX_PROCESS_BYTES) throw new ProtocolError(`process description of ${text.length} bytes exceeds ${MAX_PROCESS_BYTES}`);
  const frames: Buffer[] = [];
  for (let off = 0; off < text.length; off += MAX_PAYLOAD) frames.push(encodeFrame(FrameType.Process, text.subarray(off, off + MAX_PAYLOAD)));
  return frames;
}

export function encodeSignal(signal: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeInt32LE(signal, 0);
  return encodeFrame(FrameType.Signal, p);
}

export function encodeWindowSize(rows: number, columns: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt16LE(Math.min(Math.max(rows, 0), 0xffff), 0);
  p.writeUInt16LE(Math.min(Math.max(columns, 0), 0xffff), 2);
  return encodeFrame(FrameType.WindowSize, p);
}

export function decodeExit(payload: Uint8Array): ExitStatus {
  if (payload.length !== 5) throw new ProtocolError(`exit frame of ${payload.length} bytes, expected 5`);
  const view = Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  const value = view.readUInt32LE(1);
  if (view[0] === 0 && value <= 255) return { kind: 'exited', code: value };
  if (view[0] === 1 && value >= 1 && value <= 64) return { kind: 'signaled', signal: value };
  throw new ProtocolError(`exit frame with kind ${view[0]} and value ${value}`);
}

/** The exit status a shell would report: the code, or 128 + signal number. */
export function shellStatus(status: ExitStatus): number {
  return status.kind === 'exited' ? status.code : 128 + status.signal;
}

/** Incremental decoder: feed it whatever the socket delivers, get whole frames back. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(data: Uint8Array): Frame[] {
    this.chunks.push(Buffer.from(data.buffer, data.byteOffset, data.length));
    this.buffered += data.length;
    const frames: Frame[] = [];
    while (this.buffered >= HEADER_BYTES) {
      const head = this.peek(HEADER_BYTES);
      const length = head.readUInt32LE(0);
      if (length > MAX_PAYLOAD) throw new ProtocolError(`frame of ${length} bytes exceeds ${MAX_PAYLOAD}`);
      if (this.buffered < HEADER_BYTES + length) break;
      const whole = this.take(HEADER_BYTES + length);
      frames.push({ type: whole[4]!, payload: whole.subarray(HEADER_BYTES) });
    }
    return frames;
  }

  /** Bytes received that do not yet form a whole frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = Buffer.from(all.subarray(0, n));
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered -= n;
    return out;
  }
}
