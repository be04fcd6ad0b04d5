// Host side of the workload's I/O: accepts the guest agent's one connection on the Unix socket that the vsock
// device maps its host port to (or, for `ts-vmm exec`, connects to the agent's exec port through the device's
// socket), and turns frames into the workload's stdout/stderr, exit status and error
// reports, and ts-vmm's stdin, signals and terminal size into frames. Output is written with backpressure: while
// the host's stdout is full the socket is paused, so a fast guest cannot make ts-vmm buffer without bound.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import {
  decodeExit,
  encodeFrame,
  encodeProcess,
  encodeSignal,
  encodeStdin,
  encodeWindowSize,
  FrameDecoder,
  FrameType,
  ProtocolError,
  type ExitStatus,
  type Frame,
} from './agent-protocol.js';

export interface WorkloadStreams {
  stdin: Readable | undefined;
  stdout: Writable;
  stderr: Writable;
}

/** What ts-vmm reports about the guest's side: exec failures and the like, one line each. */
export type AgentErrorHandler = (message: string) => void;

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: Error): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((a, b) => {
    resolve = a;
    reject = b;
  });
  // Awaited by the caller in turn; an early failure must not surface as an unhandled rejection meanwhile.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

export class WorkloadIo {
  private socket: Socket | undefined;
  private readonly ready = deferred<void>();
  private readonly exit = deferred<ExitStatus>();
  private readonly execed = deferred<void>();
  private readonly firstOutput = deferred<void>();
  private started = false;
  /** Every connection not yet closed; `socket` is the one that said READY. */
  private readonly connections = new Set<Socket>();
  /** Set once EXIT has arrived: nothing more is sent to the agent. */
  private finished = false;
  private exitStatus: ExitStatus | undefined;

  private constructor(
    private readonly server: Server | undefined,
    private readonly streams: WorkloadStreams,
    private readonly onAgentError: AgentErrorHandler,
  ) {
    server?.on('connection', (s) => this.accept(s));
  }

  /** Listens on `socketPath` (the host end of the agent's vsock port) for the agent's connection. */
  static async listen(socketPath: string, streams: WorkloadStreams, onAgentError: AgentErrorHandler): Promise<WorkloadIo> {
    const server = createServer({ pauseOnConnect: true });
    server.listen(socketPath);
    await once(server, 'listening');
    return new WorkloadIo(server, streams, onAgentError);
  }

  /**
   * Connects to an agent's exec listener: a Unix socket, or with `vsockPort` the vsock device's host socket, through
   * its `CONNECT <port>` handshake (Firecracker's protocol).
   */
  static async connect(socketPath: string, vsockPort: number | undefined, streams: WorkloadStreams, onAgentError: AgentErrorHandler): Promise<WorkloadIo> {
    const socket = connect(socketPath);
    socket.on('error', () => undefined); // reported below, or by the close handler once accepted
    await once(socket, 'connect');
    if (vsockPort !== undefined) {
      socket.write(`CONNECT ${vsockPort}\n`);
      const reply = await readHandshake(socket);
      if (!/^OK [0-9]+$/.test(reply)) {
        socket.destroy();
        throw new ProtocolError(`the guest did not accept a connection to vsock port ${vsockPort}`);
      }
    }
    const io = new WorkloadIo(undefined, streams, onAgentError);
    io.accept(socket);
    return io;
  }

  /** Resolves when the agent has connected and is waiting for START. */
  whenReady(): Promise<void> {
    return this.ready.promise;
  }

  /** Resolves with the workload's exit status, after all its output has been written. */
  whenExited(): Promise<ExitStatus> {
    return this.exit.promise;
  }

  /** Resolves once the process is running (its exec succeeded); rejects if it could not be started. */
  whenStarted(): Promise<void> {
    return this.execed.promise;
  }

  /** Resolves when the workload's first output (stdout or stderr) arrives. */
  whenOutput(): Promise<void> {
    return this.firstOutput.promise;
  }

  /** Fails both promises, e.g. because the VM stopped before the agent reported. */
  abort(reason: Error): void {
    this.fail(reason);
    this.close();
  }

  /** Settles whatever is still pending; settled promises stay as they are. */
  private fail(reason: Error): void {
    this.ready.reject(reason);
    this.execed.reject(reason);
    this.exit.reject(reason);
  }

  /**
   * Sends the process description (see processWords in guest-init.ts) and lets the workload run; from here on
   * stdin is forwarded.
   */
  start(process: readonly string[], windowSize?: { rows: number; columns: number }): void {
    if (!this.socket) throw new Error('the guest agent is not connected');
    if (this.started) return;
    this.started = true;
    if (windowSize) this.socket.write(encodeWindowSize(windowSize.rows, windowSize.columns));
    for (const frame of encodeProcess(process)) this.socket.write(frame);
    this.socket.write(encodeFrame(FrameType.Start));
    const stdin = this.streams.stdin;
    if (!stdin) {
      this.socket.write(encodeFrame(FrameType.StdinEof));
      return;
    }
    stdin.on('data', (chunk: Buffer) => {
      const socket = this.socket;
      if (!socket || socket.destroyed || this.finished) return;
      let writable = true;
      for (const frame of encodeStdin(chunk)) writable = socket.write(frame);
      if (!writable) {
        stdin.pause();
        socket.once('drain', () => stdin.resume());
      }
    });
    stdin.on('end', () => {
      if (!this.finished) this.socket?.write(encodeFrame(FrameType.StdinEof));
    });
  }

  signal(signal: number): void {
    if (this.socket && !this.socket.destroyed && !this.finished) this.socket.write(encodeSignal(signal));
  }

  resize(rows: number, columns: number): void {
    if (this.socket && !this.socket.destroyed && !this.finished) this.socket.write(encodeWindowSize(rows, columns));
  }

  close(): void {
    this.streams.stdin?.pause();
    for (const socket of this.connections) socket.destroy();
    this.server?.close();
  }

  /**
   * The connection that says READY is the agent's; then the listener closes, so nothing else in the guest can
   * connect. Until then every connection is heard: a guest whose connect(2) timed out retries, and the host may
   * still hold the abandoned attempt. Those are left for the guest to close (closing them from here would make
   * the vsock device write into a closed socket) and destroyed with the rest at close().
   */
  private accept(socket: Socket): void {
    this.connections.add(socket);
    const decoder = new FrameDecoder();
    socket.on('data', (data: Buffer) => {
      if (this.socket !== undefined && this.socket !== socket) return; // an abandoned attempt
      let frames: Frame[];
      try {
        frames = decoder.push(data);
      } catch (e) {
        this.abort(e as Error);
        return;
      }
      for (const frame of frames) this.handle(frame, socket);
    });
    socket.on('error', () => undefined); // the close handler reports what matters
    socket.on('close', () => {
      this.connections.delete(socket);
      if (this.socket !== socket) return;
      if (this.exitStatus) this.exit.resolve(this.exitStatus);
      else this.fail(new ProtocolError('the guest agent disconnected without reporting an exit status'));
    });
    socket.resume();
  }

  private handle(frame: Frame, from: Socket): void {
    if (this.socket === undefined && frame.type !== FrameType.Ready && frame.type !== FrameType.Error) {
      this.abort(new ProtocolError(`frame type ${frame.type} before READY`));
      return;
    }
    switch (frame.type) {
      case FrameType.Ready:
        if (this.socket !== undefined) {
          this.abort(new ProtocolError('a second READY'));
          return;
        }
        this.socket = from;
        this.server?.close(); // the agent is connected: nothing else may connect
        this.ready.resolve();
        break;
      case FrameType.Stdout:
        this.output(this.streams.stdout, frame.payload);
        break;
      case FrameType.Stderr:
        this.output(this.streams.stderr, frame.payload);
        break;
      case FrameType.Error: {
        const message = Buffer.from(frame.payload)
          .toString('utf8')
          .replace(/[^\x20-\x7e]/g, '?');
        if (this.socket !== undefined) {
          this.onAgentError(message);
          this.execed.reject(new Error(message));
          break;
        }
        // Before READY an error means the container could not be set up; the agent waits for this close.
        this.fail(new Error(`the guest could not set up the container: ${message}`));
        from.end();
        break;
      }
      case FrameType.Started:
        this.execed.resolve();
        break;
      case FrameType.Exit:
        try {
          this.exitStatus = decodeExit(frame.payload);
        } catch (e) {
          this.abort(e as Error);
          return;
        }
        // The agent sends nothing after EXIT and powers off once this side closes (its acknowledgement), so close
        // only after every output write has been handed to its stream.
        this.finished = true;
        this.streams.stdin?.pause();
        this.flushThen(() => {
          this.exit.resolve(this.exitStatus!);
          this.socket?.end();
        });
        break;
      default:
        this.abort(new ProtocolError(`unexpected frame type ${frame.type}`));
    }
  }

  private output(stream: Writable, data: Uint8Array): void {
    this.firstOutput.resolve();
    if (!stream.write(data)) {
      this.socket?.pause();
      stream.once('drain', () => this.socket?.resume());
    }
  }

  private flushThen(done: () => void): void {
    let waiting = 2;
    const one = (): void => {
      if (--waiting === 0) done();
    };
    for (const stream of [this.streams.stdout, this.streams.stderr]) {
      if (stream.writableNeedDrain) stream.once('drain', one);
      else one();
    }
  }
}

/** The vsock device's answer to CONNECT: one short line, read byte by byte so no stream data is consumed. */
async function readHandshake(socket: Socket): Promise<string> {
  let line = '';
  for (;;) {
    const byte = socket.read(1) as Buffer | null;
    if (byte === null) {
      if (socket.readableEnded || socket.destroyed) return line;
      await Promise.race([once(socket, 'readable'), once(socket, 'close')]);
      continue;
    }
    if (byte[0] === 0x0a) return line;
    line += byte.toString('latin1');
    if (line.length > 32) return line;
  }
}
