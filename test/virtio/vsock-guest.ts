// The guest end of virtio-vsock, written for the tests: a driver for the device's three queues and a
// small stream stack (connect, accept, send with credit, receive, shutdown) on top of it.
import { GuestMemory } from '../../src/memory/guest-memory.js';
import {
  VIRTIO_VSOCK_OP_CREDIT_REQUEST,
  VIRTIO_VSOCK_OP_CREDIT_UPDATE,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RST,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_TYPE_STREAM,
} from '../../src/virtio/abi.js';
import { VirtioMmioTransport } from '../../src/virtio/mmio.js';
import { VirtioVsock } from '../../src/virtio/vsock/device.js';
import { HEADER_SIZE, HOST_CID, type VsockHeader, decodeHeader, encodeHeader } from '../../src/virtio/vsock/packet.js';
import type { VsockUnixBackendOptions } from '../../src/virtio/vsock/unix-backend.js';
import { type DriverQueue, InterruptCounter, TestDriver } from './driver.js';

export interface Packet {
  header: VsockHeader;
  payload: Uint8Array;
}

const RX_BUFFER = 4096;
const TX_BUFFER = HEADER_SIZE + 64 * 1024;
const QUEUE = 64;

/** Resolves once `check` returns a truthy value, polling the event loop. */
export async function until<T>(check: () => T | undefined | false | 0, what: string, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

export class VsockGuest {
  readonly memory = GuestMemory.shared([{ guestAddress: 0, size: 16 << 20 }]);
  readonly interrupt = new InterruptCounter();
  readonly errors: Error[] = [];
  readonly transport: VirtioMmioTransport;
  readonly driver: TestDriver;
  readonly rx: DriverQueue;
  readonly tx: DriverQueue;
  readonly events: DriverQueue;
  /** Packets received and not yet consumed by a test. */
  readonly inbox: Packet[] = [];
  readonly eventIds: number[] = [];
  private readonly rxBuffers: number[] = [];
  private readonly txBuffers: number[] = [];
  private readonly eventBuffers: number[] = [];
  private nextTx = 0;
  /** Whether received rx buffers are given back at once (false simulates a guest that stopped reading). */
  refillRx = true;
  private unreturned: number[] = [];

  private constructor(
    readonly device: VirtioVsock,
    readonly cid: number,
    rxBuffers: number,
  ) {
    this.transport = new VirtioMmioTransport(device, { memory: this.memory, interrupt: this.interrupt, onError: (e) => this.errors.push(e) });
    this.driver = new TestDriver(this.transport, this.memory);
    if (!this.driver.negotiate(this.driver.deviceFeatures())) throw new Error('vsock features refused');
    this.rx = this.driver.queue(0, QUEUE);
    this.tx = this.driver.queue(1, QUEUE);
    this.events = this.driver.queue(2, 4);
    this.driver.driverOk();
    for (let i = 0; i < QUEUE; i++) this.txBuffers.push(this.driver.heap.alloc(TX_BUFFER));
    for (let i = 0; i < rxBuffers; i++) {
      const b = this.driver.heap.alloc(RX_BUFFER);
      this.rxBuffers.push(b);
      this.rx.writeDesc(i, b, RX_BUFFER, 2, 0);
    }
    this.rx.submit(...this.rxBuffers.map((_, i) => i));
    for (let i = 0; i < 4; i++) {
      const b = this.driver.heap.alloc(4);
      this.eventBuffers.push(b);
      this.events.writeDesc(i, b, 4, 2, 0);
    }
    this.events.submit(0, 1, 2, 3);
  }

  static async start(options: VsockUnixBackendOptions, rxBuffers = QUEUE): Promise<VsockGuest> {
    return new VsockGuest(await VirtioVsock.create({ log: () => {}, ...options }), options.guestCid, rxBuffers);
  }

  async stop(): Promise<void> {
    await this.device.close();
  }

  /** Collects what the device put in the rx and event queues. */
  poll(): void {
    const used = this.rx.takeUsed();
    for (const u of used) {
      const at = this.rxBuffers[u.id]!;
      const header = decodeHeader(this.memory.read(at, HEADER_SIZE));
      this.inbox.push({ header, payload: this.memory.read(at + HEADER_SIZE, u.len - HEADER_SIZE) });
    }
    if (this.refillRx) this.returnRxBuffers([...this.unreturned.splice(0), ...used.map((u) => u.id)]);
    else this.unreturned.push(...used.map((u) => u.id));
    for (const u of this.events.takeUsed()) {
      this.eventIds.push(this.memory.readU32(this.eventBuffers[u.id]!));
      this.events.submit(u.id);
    }
  }

  returnRxBuffers(ids: number[] = this.unreturned.splice(0)): void {
    if (ids.length > 0) this.rx.submit(...ids);
  }

  /** Waits for the next packet matching `filter`, removing it from the inbox. */
  async receive(filter: (p: Packet) => boolean = () => true, what = 'a packet'): Promise<Packet> {
    return until(() => {
      this.poll();
      const i = this.inbox.findIndex(filter);
      return i < 0 ? undefined : this.inbox.splice(i, 1)[0]!;
    }, what);
  }

  /**
   * Sends one packet as Linux does: header and payload in separate descriptors. Without `kick`, the packet is
   * only offered, and goes with the next kick (kickTx).
   */
  send(h: Partial<VsockHeader> & { op: number; srcPort: number; dstPort: number }, payload: Uint8Array = new Uint8Array(0), kick = true): void {
    const header: VsockHeader = {
      srcCid: this.cid,
      dstCid: HOST_CID,
      len: payload.length,
      type: VIRTIO_VSOCK_TYPE_STREAM,
      flags: 0,
      bufAlloc: 256 * 1024,
      fwdCnt: 0,
      ...h,
    };
    const i = this.nextTx;
    this.nextTx = (this.nextTx + 2) % QUEUE;
    const at = this.txBuffers[i]!;
    this.memory.write(at, encodeHeader(header));
    this.memory.write(at + HEADER_SIZE, payload);
    this.tx.writeDesc(i, at, HEADER_SIZE, payload.length > 0 ? 1 : 0, i + 1);
    if (payload.length > 0) this.tx.writeDesc(i + 1, at + HEADER_SIZE, payload.length, 0, 0);
    this.tx.offer(i);
    if (kick) this.kickTx();
  }

  kickTx(): void {
    this.tx.notify();
    this.tx.takeUsed();
  }
}

/** One guest-side stream socket with its credit bookkeeping. */
export class GuestStream {
  received: Uint8Array[] = [];
  receivedBytes = 0;
  /** Bytes the guest application consumed (fwd_cnt) and its buffer (buf_alloc). */
  fwdCnt = 0;
  sent = 0;
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  shutdownFromHost = 0;
  reset = false;
  private advertised = 0;

  constructor(
    readonly guest: VsockGuest,
    readonly localPort: number,
    readonly hostPort: number,
    readonly bufAlloc = 256 * 1024,
  ) {}

  header(op: number, extra: Partial<VsockHeader> = {}) {
    this.advertised = this.fwdCnt;
    return { op, srcPort: this.localPort, dstPort: this.hostPort, bufAlloc: this.bufAlloc, fwdCnt: this.fwdCnt, ...extra };
  }

  /** Handles packets for this stream from the inbox. */
  pump(consume = true): void {
    this.guest.poll();
    const mine = (p: Packet) => p.header.dstPort === this.localPort && p.header.srcPort === this.hostPort;
    for (let i = 0; i < this.guest.inbox.length; ) {
      const p = this.guest.inbox[i]!;
      if (!mine(p)) {
        i++;
        continue;
      }
      this.guest.inbox.splice(i, 1);
      this.peerBufAlloc = p.header.bufAlloc;
      this.peerFwdCnt = p.header.fwdCnt;
      if (p.header.op === VIRTIO_VSOCK_OP_RW) {
        this.received.push(p.payload);
        this.receivedBytes += p.payload.length;
        if (consume) this.fwdCnt += p.payload.length;
      } else if (p.header.op === VIRTIO_VSOCK_OP_SHUTDOWN) {
        this.shutdownFromHost |= p.header.flags;
      } else if (p.header.op === VIRTIO_VSOCK_OP_RST) {
        this.reset = true;
      } else if (p.header.op === VIRTIO_VSOCK_OP_CREDIT_REQUEST) {
        this.guest.send(this.header(VIRTIO_VSOCK_OP_CREDIT_UPDATE));
      }
    }
    // Like Linux: tell the host about consumed bytes before its credit runs out.
    if (this.fwdCnt - this.advertised >= this.bufAlloc / 4) this.creditUpdate();
  }

  /** Tells the host how much the application consumed. */
  creditUpdate(): void {
    this.guest.send(this.header(VIRTIO_VSOCK_OP_CREDIT_UPDATE));
  }

  credit(): number {
    return this.peerBufAlloc - (this.sent - this.peerFwdCnt);
  }

  /** Sends all of `data`, waiting for credit as needed. */
  async write(data: Uint8Array, chunk = 16 * 1024): Promise<void> {
    for (let at = 0; at < data.length; ) {
      const credit = await until(() => {
        this.pump();
        return this.reset ? -1 : this.credit() > 0 && this.credit();
      }, 'send credit');
      if (credit < 0) throw new Error('connection reset');
      const n = Math.min(chunk, credit, data.length - at);
      this.guest.send(this.header(VIRTIO_VSOCK_OP_RW), data.subarray(at, at + n));
      this.sent += n;
      at += n;
    }
  }

  async readExactly(n: number): Promise<Uint8Array> {
    await until(() => {
      this.pump();
      return this.receivedBytes >= n;
    }, `${n} bytes`);
    return Buffer.concat(this.received);
  }

  shutdown(flags: number): void {
    this.guest.send(this.header(VIRTIO_VSOCK_OP_SHUTDOWN, { flags }));
  }

  rst(): void {
    this.guest.send(this.header(VIRTIO_VSOCK_OP_RST));
  }

  /** Guest connect(CID 2, hostPort): REQUEST, then waits for RESPONSE or RST. */
  async connect(): Promise<boolean> {
    this.guest.send(this.header(VIRTIO_VSOCK_OP_REQUEST));
    const answer = await this.guest.receive((p) => p.header.dstPort === this.localPort && p.header.srcPort === this.hostPort, 'RESPONSE or RST');
    this.peerBufAlloc = answer.header.bufAlloc;
    this.peerFwdCnt = answer.header.fwdCnt;
    return answer.header.op === VIRTIO_VSOCK_OP_RESPONSE;
  }

  /** Accepts a REQUEST the host sent to `guestPort`. */
  static async accept(guest: VsockGuest, guestPort: number, bufAlloc?: number): Promise<GuestStream> {
    const req = await guest.receive((p) => p.header.op === VIRTIO_VSOCK_OP_REQUEST && p.header.dstPort === guestPort, `REQUEST to ${guestPort}`);
    const s = new GuestStream(guest, guestPort, req.header.srcPort, bufAlloc);
    s.peerBufAlloc = req.header.bufAlloc;
    s.peerFwdCnt = req.header.fwdCnt;
    guest.send(s.header(VIRTIO_VSOCK_OP_RESPONSE));
    return s;
  }
}
