// virtio-vsock (virtio 1.2 §5.10), stream sockets, over the Unix-socket backend. Queues: 0 rx (device
// to guest), 1 tx (guest to device), 2 event. Host events (socket data, connects) arrive on the event
// loop and are turned into rx packets on the next turn, batched, under the transport's guard. A kick
// on either data queue runs one pass that alternates between them, up to a budget of packets.
import { offsetOf } from '../../sys/abi.js';
import { VIRTIO_F_VERSION_1, VIRTIO_ID_VSOCK, VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, feature, virtioVsockConfig, virtioVsockEvent } from '../abi.js';
import type { DescriptorChain } from '../descriptor-chain.js';
import type { ActivatedQueues, DeviceSignals, VirtioDevice } from '../device.js';
import { type Virtqueue, VirtqueueError } from '../virtqueue.js';
import { HEADER_SIZE, MAX_PAYLOAD, decodeHeader, encodeHeader } from './packet.js';
import { VsockUnixBackend, type VsockUnixBackendOptions } from './unix-backend.js';

const RX = 0;
const TX = 1;
const EVENT = 2;
/**
 * Packets moved per pass, both directions together (vhost-vsock's weight idea): the device runs on the
 * main thread, and a guest that keeps refilling its tx ring must not hold the event loop. The rest of
 * the work waits for a later pass (DeviceSignals.defer).
 */
export const PACKETS_PER_PASS = 256;
/** The smallest CID a guest may have (0-2 are reserved: hypervisor, local, host). */
export const MIN_GUEST_CID = 3;

export class VirtioVsock implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_VSOCK;
  readonly features = feature(VIRTIO_F_VERSION_1);
  readonly queueMaxSizes = [256, 256, 16];
  readonly configSize = virtioVsockConfig.size;
  private readonly config = new Uint8Array(virtioVsockConfig.size);
  private readonly headerBytes = new Uint8Array(HEADER_SIZE);
  private signals: DeviceSignals | undefined;
  private rx: Virtqueue | null = null;
  private tx: Virtqueue | null = null;
  private event: Virtqueue | null = null;
  private pendingEvents = 0;

  private constructor(readonly backend: VsockUnixBackend) {
    new DataView(this.config.buffer).setBigUint64(offsetOf(virtioVsockConfig, 'guest_cid'), BigInt(backend.guestCid), true);
    backend.onPending = () => this.signals?.defer(RX);
  }

  /** Creates the device and starts listening on `udsPath` for host-initiated connections. */
  static async create(options: VsockUnixBackendOptions): Promise<VirtioVsock> {
    const cid = options.guestCid;
    if (!Number.isSafeInteger(cid) || cid < MIN_GUEST_CID || cid > 0xffff_fffe) {
      throw new Error(`vsock guest CID ${cid} is invalid: it must be between ${MIN_GUEST_CID} and ${0xffff_fffe}`);
    }
    return new VirtioVsock(await VsockUnixBackend.listen(options));
  }

  attach(signals: DeviceSignals): void {
    this.signals = signals;
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.set(this.config.subarray(offset, offset + data.length));
  }

  writeConfig(): void {
    // guest_cid is read-only.
  }

  activate({ queues }: ActivatedQueues): void {
    [this.rx, this.tx, this.event] = [queues[RX] ?? null, queues[TX] ?? null, queues[EVENT] ?? null];
    if (!this.rx || !this.tx) throw new Error('vsock: the driver did not enable the rx and tx queues');
    this.backend.active = true;
  }

  reset(): void {
    this.backend.active = false;
    this.backend.reset();
    this.rx = this.tx = this.event = null;
    this.pendingEvents = 0;
  }

  async close(): Promise<void> {
    this.reset();
    await this.backend.close();
  }

  /**
   * Drops every connection and tells the guest with VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, after which
   * its driver resets all its sockets (what a VMM does when host-side state was lost, e.g. on restore).
   */
  transportReset(): void {
    this.backend.reset();
    this.pendingEvents++;
    this.signals?.guard(() => this.deliverEvents());
  }

  queueNotify(index: number): void {
    if (index === TX || index === RX) this.pass();
    else if (index === EVENT) this.deliverEvents();
  }

  /**
   * Moves packets both ways until neither side can move, or the budget is spent: rx first (what the
   * host has for the guest, which also relieves congestion), then tx (whose packets may queue more for
   * rx), and again while tx made progress.
   */
  private pass(): void {
    let budget = PACKETS_PER_PASS;
    for (;;) {
      budget -= this.fillRx(budget);
      if (budget === 0) break;
      const taken = this.processTx(budget);
      budget -= taken;
      if (taken === 0 || budget === 0) break;
    }
    if (budget === 0) this.signals?.defer(TX);
  }

  /** Takes up to `max` packets from the guest, stopping when the ring is empty or the rx side congested. */
  private processTx(max: number): number {
    const q = this.tx;
    if (!q) return 0;
    let taken = 0;
    for (;;) {
      q.disableNotification();
      while (taken < max && !this.backend.congested()) {
        const chain = q.pop();
        if (!chain) break;
        this.receive(chain);
        q.addUsed(chain.head, 0);
        taken++;
      }
      // Budget spent: the pass is deferred and comes back. Congested: the rest waits in the ring until
      // the guest takes rx packets (its rx kick starts a pass).
      if (taken === max || this.backend.congested() || !q.enableNotification()) break;
    }
    if (q.needsInterrupt()) this.signals?.usedBuffers();
    return taken;
  }

  private receive(chain: DescriptorChain): void {
    // A packet too short for its header, or with a length it does not carry, cannot be attributed
    // reliably: it is consumed and dropped (Linux never sends one).
    if (chain.read(0, this.headerBytes) < HEADER_SIZE) return;
    const header = decodeHeader(this.headerBytes);
    if (header.len > MAX_PAYLOAD || header.len > chain.readableLength - HEADER_SIZE) return;
    const payload = new Uint8Array(header.len);
    chain.read(HEADER_SIZE, payload);
    this.backend.fromGuest(header, payload);
  }

  /** Moves up to `max` packets from the backend into rx buffers while both exist; returns how many. */
  private fillRx(max: number): number {
    const q = this.rx;
    if (!q) return 0;
    let moved = 0;
    for (;;) {
      q.disableNotification();
      while (moved < max && this.backend.hasPending()) {
        const chain = q.pop();
        if (!chain) break;
        if (chain.writableLength < HEADER_SIZE) {
          throw new VirtqueueError(`vsock rx buffer of ${chain.writableLength} bytes cannot hold a ${HEADER_SIZE}-byte header`);
        }
        const packet = this.backend.next(Math.min(MAX_PAYLOAD, chain.writableLength - HEADER_SIZE))!;
        chain.write(0, encodeHeader(packet.header, this.headerBytes));
        let at = HEADER_SIZE;
        for (const piece of packet.payload ?? []) at += chain.write(at, piece);
        q.addUsed(chain.head, HEADER_SIZE + packet.header.len);
        moved++;
      }
      // With work left and the ring empty, ask the driver to kick when it adds rx buffers.
      if (moved === max || !this.backend.hasPending() || !q.enableNotification()) break;
    }
    if (q.needsInterrupt()) this.signals?.usedBuffers();
    return moved;
  }

  private deliverEvents(): void {
    const q = this.event;
    if (!q) return;
    const bytes = new Uint8Array(virtioVsockEvent.size);
    new DataView(bytes.buffer).setUint32(offsetOf(virtioVsockEvent, 'id'), VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, true);
    for (;;) {
      while (this.pendingEvents > 0) {
        const chain = q.pop();
        if (!chain) break;
        q.addUsed(chain.head, chain.write(0, bytes));
        this.pendingEvents--;
      }
      // An event still waiting needs a kick when the driver adds event buffers.
      if (this.pendingEvents === 0 || !q.enableNotification()) break;
    }
    if (q.needsInterrupt()) this.signals?.usedBuffers();
  }
}
