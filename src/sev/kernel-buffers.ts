// SEV commands hand the kernel structs that point at more buffers (certificates, session, measurement,
// secret). Those must sit at stable host addresses for the duration of the ioctl, which JS heap buffers do
// not promise; an anonymous mapping does. One mapping per device, carved anew for each command.
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, mmap, munmap, type Mapping } from '../sys/sys.js';

export class KernelBuffers {
  private readonly mapping: Mapping;
  private used = 0;

  constructor(readonly capacity = 64 * 1024) {
    this.mapping = mmap(capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, 'mmap SEV command buffers');
  }

  /** Starts a command: earlier allocations are released. */
  reset(): void {
    this.used = 0;
  }

  /** `length` zeroed bytes (16-byte aligned), optionally initialised from `from`. */
  allocate(length: number, from?: Uint8Array, what = 'buffer'): { address: bigint; bytes: Uint8Array } {
    const start = Math.ceil(this.used / 16) * 16;
    if (start + length > this.capacity) throw new RangeError(`SEV command ${what} of ${length} bytes exceeds the ${this.capacity}-byte command area`);
    this.used = start + length;
    const bytes = this.mapping.bytes.subarray(start, start + length);
    bytes.fill(0);
    if (from) bytes.set(from);
    return { address: this.mapping.address + BigInt(start), bytes };
  }

  close(): void {
    munmap(this.mapping);
  }
}
