// One vsock stream between a guest port and a host Unix socket, with the credit-based flow control
// of virtio 1.2 §5.10.6.3. Memory is bounded both ways:
// - guest -> host: the guest may have at most `bufAlloc` bytes in flight that the Unix socket has not
//   accepted yet (fwd_cnt only advances when the kernel took the bytes); more is a protocol violation.
// - host -> guest: the socket is paused while `pendingLimit` bytes wait for the guest (no rx buffers,
//   or no credit because the guest application reads slowly).
import type net from 'node:net';
import { VIRTIO_VSOCK_SHUTDOWN_RCV, VIRTIO_VSOCK_SHUTDOWN_SEND } from '../abi.js';

export type ConnectionState = 'connecting' | 'established' | 'closed';

export interface ConnectionEvents {
  /** The connection has something for the guest (data with credit, a shutdown, a credit update). */
  ready(c: Connection): void;
  /** The connection ended on the host side abnormally: the guest gets an RST. */
  reset(c: Connection): void;
  /** Socket errors and the like, for the log. */
  log(message: string): void;
}

export class Connection {
  state: ConnectionState = 'connecting';
  /** Host -> guest bytes read from the socket, not yet sent to the guest. */
  private pending: Uint8Array[] = [];
  pendingBytes = 0;
  /** Bytes sent to the guest (tx_cnt) and the guest's receive window (buf_alloc, fwd_cnt). */
  private txCnt = 0;
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  /** Guest -> host bytes received (rx_cnt) and handed to the kernel (fwd_cnt). */
  private rxCnt = 0;
  fwdCnt = 0;
  /** fwd_cnt as the guest last heard it. */
  private advertisedFwdCnt = 0;
  creditUpdateWanted = false;
  creditRequestWanted = false;
  private creditRequested = false;
  /** SHUTDOWN flags to send once pending data is out. */
  shutdownToSend = 0;
  /** What the guest said it will no longer do. */
  private guestShutdown = 0;
  private paused = false;
  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  constructor(
    readonly socket: net.Socket,
    /** Port on the host side (CID 2) and on the guest side. */
    readonly hostPort: number,
    readonly guestPort: number,
    /** Whether a host program asked for it (CONNECT) rather than the guest (REQUEST). */
    readonly hostInitiated: boolean,
    readonly bufAlloc: number,
    private readonly pendingLimit: number,
    private readonly events: ConnectionEvents,
    /** Bytes the host sent before the connection was set up (after a CONNECT line). */
    early?: Uint8Array,
  ) {
    // Nothing is read from the host until the guest end exists and has granted credit.
    socket.pause();
    this.paused = true;
    if (early?.length) this.fromHost(early);
    socket.on('data', (chunk: Buffer) => this.fromHost(chunk));
    socket.on('end', () => this.hostEnd());
    socket.on('error', (e) => {
      events.log(`vsock ${hostPort}<->${guestPort}: ${e.message}`);
      this.abort();
    });
    socket.on('close', () => this.abort());
  }

  get key(): string {
    return connectionKey(this.hostPort, this.guestPort);
  }

  /** Starts the byte stream once both ends agreed (RESPONSE sent or received). */
  establish(): void {
    this.state = 'established';
    this.updateFlow();
  }

  /** Credit the guest still grants us. */
  peerCredit(): number {
    return Math.max(0, this.peerBufAlloc - ((this.txCnt - this.peerFwdCnt) >>> 0));
  }

  /** Learns the guest's receive window from any packet it sent. */
  peerWindow(bufAlloc: number, fwdCnt: number): void {
    this.peerBufAlloc = bufAlloc;
    this.peerFwdCnt = fwdCnt;
    if (this.peerCredit() > 0) this.creditRequested = false;
    this.updateFlow();
  }

  /** Whether the device has a packet of this connection to send now. */
  hasWork(): boolean {
    if (this.state !== 'established') return false;
    return (
      (this.pendingBytes > 0 && this.peerCredit() > 0) ||
      this.creditUpdateWanted ||
      this.creditRequestWanted ||
      (this.shutdownToSend !== 0 && this.pendingBytes === 0)
    );
  }

  /**
   * Takes up to `max` bytes of host data the guest has credit for, and counts them as sent. Returns
   * views of the socket's chunks (no copy); they stay valid because chunks are never reused.
   */
  takeData(max: number): Uint8Array[] {
    let n = Math.min(max, this.pendingBytes, this.peerCredit());
    const out: Uint8Array[] = [];
    this.pendingBytes -= n;
    this.txCnt = (this.txCnt + n) >>> 0;
    while (n > 0) {
      const head = this.pending[0]!;
      const k = Math.min(head.length, n);
      out.push(head.subarray(0, k));
      n -= k;
      if (k === head.length) this.pending.shift();
      else this.pending[0] = head.subarray(k);
    }
    this.updateFlow();
    return out;
  }

  /** Marks fwd_cnt as told to the guest (every packet header carries it). */
  advertised(): void {
    this.advertisedFwdCnt = this.fwdCnt;
    this.creditUpdateWanted = false;
  }

  /** Data from the guest. Returns false when the guest exceeded the credit we gave it. */
  fromGuest(payload: Uint8Array): boolean {
    if (this.guestShutdown & VIRTIO_VSOCK_SHUTDOWN_SEND) return false;
    if (((this.rxCnt - this.fwdCnt) >>> 0) + payload.length > this.bufAlloc) return false;
    this.rxCnt = (this.rxCnt + payload.length) >>> 0;
    const n = payload.length;
    // The packets of one pass over the tx ring go to the socket in one writev, after the pass.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    this.socket.write(payload, (error) => {
      if (error) return;
      this.fwdCnt = (this.fwdCnt + n) >>> 0;
      // Tell the guest about freed space before its credit runs dry, not after every write.
      if ((this.fwdCnt - this.advertisedFwdCnt) >>> 0 >= this.bufAlloc / 4) {
        this.creditUpdateWanted = true;
        this.events.ready(this);
      }
    });
    return true;
  }

  /** The guest asked how much room we have. */
  creditRequest(): void {
    this.creditUpdateWanted = true;
    this.events.ready(this);
  }

  /**
   * The guest shut one or both directions. Returns true when the connection is done both ways and
   * the caller should answer with RST (what Linux waits for to finish close()).
   */
  guestShutdownReceived(flags: number): boolean {
    this.guestShutdown |= flags & (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND);
    if (this.guestShutdown & VIRTIO_VSOCK_SHUTDOWN_RCV) {
      // The guest will not read: what the host sends from now on has nowhere to go.
      this.pending = [];
      this.pendingBytes = 0;
    }
    if (this.guestShutdown & VIRTIO_VSOCK_SHUTDOWN_SEND) this.socket.end();
    this.updateFlow();
    return this.guestShutdown === (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND);
  }

  /** Closes the host side at once (an RST from the guest, a device reset). */
  close(): void {
    this.state = 'closed';
    this.pending = [];
    this.pendingBytes = 0;
    this.socket.destroy();
  }

  /**
   * Closes after the bytes already written reach the socket (a graceful end both ways). The socket is
   * then released whatever the host program does: the guest reads no more, so nothing it could still
   * send has anywhere to go, and a host program that never closes its end must not hold our descriptor.
   */
  finish(): void {
    this.state = 'closed';
    this.pending = [];
    this.pendingBytes = 0;
    this.socket.end(() => this.socket.destroy());
  }

  private fromHost(chunk: Uint8Array): void {
    if (this.state === 'closed' || this.guestShutdown & VIRTIO_VSOCK_SHUTDOWN_RCV) return;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.updateFlow();
  }

  private hostEnd(): void {
    this.shutdownToSend |= VIRTIO_VSOCK_SHUTDOWN_SEND;
    this.updateFlow();
  }

  private abort(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.pending = [];
    this.pendingBytes = 0;
    this.events.reset(this);
  }

  /** Pauses or resumes reading the socket, and tells the device when there is something to send. */
  private updateFlow(): void {
    if (this.state !== 'established') {
      this.setPaused(true);
      return;
    }
    this.setPaused(this.pendingBytes >= this.pendingLimit || (this.guestShutdown & VIRTIO_VSOCK_SHUTDOWN_RCV) !== 0);
    if (this.pendingBytes > 0 && this.peerCredit() === 0 && !this.creditRequested) {
      this.creditRequested = true;
      this.creditRequestWanted = true;
    }
    if (this.hasWork()) this.events.ready(this);
  }

  private setPaused(paused: boolean): void {
    if (paused === this.paused) return;
    this.paused = paused;
    if (paused) this.socket.pause();
    else this.socket.resume();
  }
}

export const connectionKey = (hostPort: number, guestPort: number): string => `${hostPort}:${guestPort}`;
