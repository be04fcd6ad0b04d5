// A disk whose guest keeps its ring full from a second vCPU: each time the device reads the image
// for a request, the "guest" publishes the same request again in the next available slot. Built by
// the tests in place of VirtioBlk, on the main thread or (by module URL) on an I/O thread, so the
// refill happens while the device is inside its pass, as a real second vCPU's would.
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import { VirtioBlk, type VirtioBlkOptions } from '../../src/virtio/blk.js';
import type { ActivatedQueues } from '../../src/virtio/device.js';

export interface RefillingBlkOptions extends VirtioBlkOptions {
  /** How many times to republish (Infinity: for ever). */
  refills: number;
}

export class RefillingBlk extends VirtioBlk {
  private ring: { memory: GuestMemory; avail: Uint16Array; size: number } | undefined;
  private left: number;
  /** Requests the device read from the image. */
  reads = 0;

  constructor(options: RefillingBlkOptions) {
    super(options);
    this.left = options.refills;
    const read = this.image.read.bind(this.image);
    this.image.read = (views, position) => {
      read(views, position);
      this.reads++;
      this.republish();
    };
  }

  override activate(queues: ActivatedQueues): void {
    super.activate(queues);
    const q = queues.queues[0];
    if (!q) return;
    const bytes = queues.memory.slice(q.layout.availRing, 4 + 2 * q.size);
    this.ring = { memory: queues.memory, avail: new Uint16Array(bytes.buffer, bytes.byteOffset, 2 + q.size), size: q.size };
  }

  private republish(): void {
    const r = this.ring;
    if (!r || this.left === 0) return;
    this.left--;
    const idx = Atomics.load(r.avail, 1);
    r.avail[2 + (idx % r.size)] = r.avail[2 + ((idx + 0xffff) % r.size)]!;
    Atomics.store(r.avail, 1, (idx + 1) & 0xffff);
  }
}
