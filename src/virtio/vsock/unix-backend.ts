// The host side of virtio-vsock as Unix sockets, compatible with Firecracker's documented protocol:
// - host-initiated: a program connects to UDS_PATH, writes `CONNECT <port>\n`, and once the guest
//   accepts gets `OK <host port>\n` followed by the byte stream;
// - guest-initiated: a guest connect(CID 2, port P) reaches a listener at `UDS_PATH_P`.
// The backend multiplexes the connections and queues what must go to the guest; the device pulls.
import fs from 'node:fs';
import net from 'node:net';
import {
  VIRTIO_VSOCK_OP_CREDIT_REQUEST,
  VIRTIO_VSOCK_OP_CREDIT_UPDATE,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RST,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_TYPE_STREAM,
} from '../abi.js';
import { checkSocketPath } from '../../sys/socket-path.js';
import { Connection, type ConnectionEvents, connectionKey } from './connection.js';
import { HOST_CID, type OutgoingPacket, type VsockHeader } from './packet.js';

export interface VsockUnixBackendOptions {
  guestCid: number;
  udsPath: string;
  /** Receive buffer per connection advertised to the guest (buf_alloc). */
  bufAlloc?: number;
  /** Host data read ahead per connection before the socket is paused. */
  pendingLimit?: number;
  maxConnections?: number;
  /** How long a host program may take to send its CONNECT line, and the guest to answer the REQUEST. */
  connectTimeoutMs?: number;
  log?: (message: string) => void;
}

/** Control packets waiting for rx buffers; past this the device stops taking tx packets. */
const CONTROL_LIMIT = 1024;
const CONNECT_LINE_MAX = 32;
/** Host-side ports for host-initiated connections start here, away from well-known guest ports. */
const FIRST_HOST_PORT = 1 << 30;
/** The longest suffix a guest listener's path adds to UDS_PATH: `_` and a 32-bit port. */
const MAX_PORT_SUFFIX = '_4294967295';

export class VsockUnixBackend {
  readonly guestCid: number;
  readonly udsPath: string;
  private readonly bufAlloc: number;
  private readonly pendingLimit: number;
  private readonly maxConnections: number;
  private readonly connectTimeoutMs: number;
  private readonly log: (message: string) => void;
  private readonly server: net.Server;
  private readonly connections = new Map<string, Connection>();
  private readonly hostPorts = new Set<number>();
  /** Host programs accepted that have not sent their CONNECT line yet: they count against the limit. */
  private handshakes = 0;
  private readonly ready = new Set<Connection>();
  private control: OutgoingPacket[] = [];
  private nextHostPort = FIRST_HOST_PORT;
  private readonly events: ConnectionEvents;
  /** Whether the guest driver is up; host connections are refused otherwise. */
  active = false;
  /** Called when something new is waiting for the guest. */
  onPending: () => void = () => {};

  private constructor(options: VsockUnixBackendOptions) {
    this.guestCid = options.guestCid;
    this.udsPath = options.udsPath;
    this.bufAlloc = options.bufAlloc ?? 256 * 1024;
    this.pendingLimit = options.pendingLimit ?? 256 * 1024;
    this.maxConnections = options.maxConnections ?? 1024;
    // Generous: a busy or nested guest can take seconds to answer a REQUEST, and a connection torn
    // down just as the guest accepts it costs the guest its listener's first connection.
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.log = options.log ?? ((m) => process.stderr.write(`vsock: ${m}\n`));
    this.events = {
      ready: (c) => {
        this.ready.add(c);
        this.onPending();
      },
      reset: (c) => this.resetConnection(c),
      log: this.log,
    };
    this.server = net.createServer({ allowHalfOpen: true }, (s) => this.hostConnected(s));
  }

  /** Listens on `udsPath` (replacing a stale socket file, refusing to replace anything else). */
  static async listen(options: VsockUnixBackendOptions): Promise<VsockUnixBackend> {
    const b = new VsockUnixBackend(options);
    checkSocketPath(b.udsPath, MAX_PORT_SUFFIX.length); // and the guest's listeners beside it, UDS_PATH_PORT
    const st = fs.statSync(b.udsPath, { throwIfNoEntry: false });
    if (st && !st.isSocket()) throw new Error(`vsock: ${b.udsPath} exists and is not a Unix socket`);
    if (st) fs.unlinkSync(b.udsPath);
    await new Promise<void>((resolve, reject) => {
      b.server.once('error', (e) => reject(new Error(`vsock: cannot listen on ${b.udsPath}: ${e.message}`)));
      b.server.listen(b.udsPath, () => resolve());
    });
    return b;
  }

  async close(): Promise<void> {
    this.reset();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Drops every connection (device reset or transport reset). */
  reset(): void {
    for (const c of this.connections.values()) c.close();
    this.connections.clear();
    this.hostPorts.clear();
    this.ready.clear();
    this.control = [];
  }

  /** Too many control packets wait for rx buffers: stop taking packets from the guest for now. */
  congested(): boolean {
    return this.control.length >= CONTROL_LIMIT;
  }

  hasPending(): boolean {
    if (this.control.length > 0) return true;
    for (const c of this.ready) {
      if (c.hasWork()) return true;
      this.ready.delete(c);
    }
    return false;
  }

  /** The next packet for the guest with at most `maxPayload` bytes of data; connections take turns. */
  next(maxPayload: number): OutgoingPacket | null {
    const queued = this.control.shift();
    if (queued) return queued;
    for (const c of this.ready) {
      this.ready.delete(c);
      if (!c.hasWork()) continue;
      let packet: OutgoingPacket;
      if (c.pendingBytes > 0 && c.peerCredit() > 0) {
        const payload = c.takeData(maxPayload);
        const length = payload.reduce((n, p) => n + p.length, 0);
        packet = { header: this.header(c, VIRTIO_VSOCK_OP_RW, 0, length), payload };
      } else if (c.creditUpdateWanted) {
        packet = { header: this.header(c, VIRTIO_VSOCK_OP_CREDIT_UPDATE) };
      } else if (c.creditRequestWanted) {
        c.creditRequestWanted = false;
        packet = { header: this.header(c, VIRTIO_VSOCK_OP_CREDIT_REQUEST) };
      } else {
        packet = { header: this.header(c, VIRTIO_VSOCK_OP_SHUTDOWN, c.shutdownToSend) };
        c.shutdownToSend = 0;
      }
      if (c.hasWork()) this.ready.add(c); // to the back of the line
      return packet;
    }
    return null;
  }

  /** A packet the guest sent (payload already copied out of guest memory). */
  fromGuest(h: VsockHeader, payload: Uint8Array): void {
    // A guest claiming another CID is spoofing: ignore it, as the peer of a real network would.
    if (h.srcCid !== this.guestCid) return;
    if (h.dstCid !== HOST_CID || h.type !== VIRTIO_VSOCK_TYPE_STREAM) {
      this.refuse(h);
      return;
    }
    const c = this.connections.get(connectionKey(h.dstPort, h.srcPort));
    if (!c) {
      if (h.op === VIRTIO_VSOCK_OP_REQUEST) this.connectToHost(h);
      else this.refuse(h);
      return;
    }
    c.peerWindow(h.bufAlloc, h.fwdCnt);
    switch (h.op) {
      case VIRTIO_VSOCK_OP_RESPONSE:
        if (c.state !== 'connecting' || !c.hostInitiated) {
          this.resetConnection(c);
          return;
        }
        c.socket.write(`OK ${c.hostPort}\n`);
        c.establish();
        return;
      case VIRTIO_VSOCK_OP_RW:
        if (c.state !== 'established' || !c.fromGuest(payload)) this.resetConnection(c);
        return;
      case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
        return;
      case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        c.creditRequest();
        return;
      case VIRTIO_VSOCK_OP_SHUTDOWN:
        if (c.guestShutdownReceived(h.flags)) {
          this.forget(c);
          c.finish();
          this.control.push({ header: this.header(c, VIRTIO_VSOCK_OP_RST) });
        }
        return;
      case VIRTIO_VSOCK_OP_RST:
        this.forget(c);
        c.close();
        return;
      default: // a second REQUEST on a live connection, or an unknown op
        this.resetConnection(c);
    }
  }

  private hostConnected(socket: net.Socket): void {
    if (!this.active || this.connections.size + this.handshakes >= this.maxConnections) {
      socket.destroy();
      return;
    }
    this.handshakes++;
    let handshaking = true;
    const handshakeOver = () => {
      if (handshaking) this.handshakes--;
      handshaking = false;
    };
    socket.once('close', handshakeOver);
    let line = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      line = Buffer.concat([line, chunk]);
      const eol = line.indexOf(0x0a);
      if (eol < 0) {
        if (line.length > CONNECT_LINE_MAX) socket.destroy();
        return;
      }
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', handshakeOver);
      socket.setTimeout(0);
      socket.off('timeout', onTimeout);
      handshakeOver();
      const match = /^CONNECT ([0-9]{1,10})$/.exec(line.subarray(0, eol).toString('latin1'));
      const port = match ? Number(match[1]) : -1;
      if (port < 0 || port > 0xffff_ffff || !this.active) {
        socket.destroy();
        return;
      }
      this.connectToGuest(socket, port, line.subarray(eol + 1));
    };
    const onError = () => socket.destroy();
    // A client that never sends its CONNECT line must not hold a socket forever.
    const onTimeout = () => socket.destroy();
    socket.setTimeout(this.connectTimeoutMs, onTimeout);
    socket.on('data', onData);
    socket.on('error', onError);
  }

  /** A host program asked for guest port `guestPort`: send the guest a REQUEST. */
  private connectToGuest(socket: net.Socket, guestPort: number, early: Uint8Array): void {
    // Guest-initiated connections may have taken the room since this program was accepted.
    if (this.connections.size >= this.maxConnections) {
      socket.destroy();
      return;
    }
    const hostPort = this.allocateHostPort(guestPort);
    const c = new Connection(socket, hostPort, guestPort, true, this.bufAlloc, this.pendingLimit, this.events, early);
    this.connections.set(c.key, c);
    this.hostPorts.add(hostPort);
    this.control.push({ header: this.header(c, VIRTIO_VSOCK_OP_REQUEST) });
    setTimeout(() => {
      if (c.state === 'connecting' && this.connections.get(c.key) === c) this.resetConnection(c);
    }, this.connectTimeoutMs).unref();
    this.onPending();
  }

  /** The guest connected to host port h.dstPort: connect to the listener at `UDS_PATH_<port>`. */
  private connectToHost(h: VsockHeader): void {
    if (this.connections.size >= this.maxConnections) {
      this.refuse(h);
      return;
    }
    const socket = net.connect({ path: `${this.udsPath}_${h.dstPort}`, allowHalfOpen: true });
    const c = new Connection(socket, h.dstPort, h.srcPort, false, this.bufAlloc, this.pendingLimit, this.events);
    c.peerWindow(h.bufAlloc, h.fwdCnt);
    this.connections.set(c.key, c);
    socket.once('connect', () => {
      if (this.connections.get(c.key) !== c) return;
      this.control.push({ header: this.header(c, VIRTIO_VSOCK_OP_RESPONSE) });
      c.establish();
      this.onPending();
    });
  }

  /** Ends a connection abnormally: the host socket is destroyed and the guest gets an RST. */
  private resetConnection(c: Connection): void {
    if (this.connections.get(c.key) !== c) return;
    this.forget(c);
    c.close();
    this.control.push({ header: this.header(c, VIRTIO_VSOCK_OP_RST) });
    this.onPending();
  }

  private forget(c: Connection): void {
    this.connections.delete(c.key);
    this.ready.delete(c);
    if (c.hostInitiated) this.hostPorts.delete(c.hostPort);
  }

  /** Answers a packet that belongs to no connection with an RST (never an RST to an RST). */
  private refuse(h: VsockHeader): void {
    if (h.op === VIRTIO_VSOCK_OP_RST) return;
    this.control.push({
      header: {
        srcCid: HOST_CID,
        dstCid: this.guestCid,
        srcPort: h.dstPort,
        dstPort: h.srcPort,
        len: 0,
        type: VIRTIO_VSOCK_TYPE_STREAM,
        op: VIRTIO_VSOCK_OP_RST,
        flags: 0,
        bufAlloc: 0,
        fwdCnt: 0,
      },
    });
  }

  private header(c: Connection, op: number, flags = 0, len = 0): VsockHeader {
    c.advertised();
    return {
      srcCid: HOST_CID,
      dstCid: this.guestCid,
      srcPort: c.hostPort,
      dstPort: c.guestPort,
      len,
      type: VIRTIO_VSOCK_TYPE_STREAM,
      op,
      flags,
      bufAlloc: c.bufAlloc,
      fwdCnt: c.fwdCnt,
    };
  }

  /**
   * A host port for a new connection to `guestPort`: one no host-initiated connection holds, and not
   * the pair of a guest-initiated connection (the guest chooses its destination ports freely). At most
   * maxConnections ports are taken, so the search ends.
   */
  private allocateHostPort(guestPort: number): number {
    while (this.hostPorts.has(this.nextHostPort) || this.connections.has(connectionKey(this.nextHostPort, guestPort))) {
      this.nextHostPort = this.nextPort(this.nextHostPort);
    }
    const port = this.nextHostPort;
    this.nextHostPort = this.nextPort(port);
    return port;
  }

  private nextPort(port: number): number {
    return port === 0xffff_ffff ? FIRST_HOST_PORT : port + 1;
  }
}
