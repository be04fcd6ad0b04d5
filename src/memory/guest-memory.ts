// Guest physical memory as seen from the VMM. Every access names a guest-physical range and is checked
// to lie wholly inside one RAM region: a guest-supplied address can never reach host memory around it.
import {
  MADV_DONTFORK,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_NORESERVE,
  MAP_PRIVATE,
  PROT_READ,
  PROT_WRITE,
  madvise,
  mmapAddress,
  munmap,
  viewAt,
  PAGE_SIZE,
} from '../sys/sys.js';
import type { IoVectors } from './io-vectors.js';
import { MAX_REGION_SIZE } from './limits.js';

export class GuestMemoryError extends Error {
  override readonly name = 'GuestMemoryError';
  constructor(
    readonly guestAddress: number,
    readonly length: number,
    why = 'is not inside guest RAM',
  ) {
    super(`guest range 0x${guestAddress.toString(16)}+0x${length.toString(16)} ${why}`);
  }
}

/** How a region is backed: an mmap in this process (shareable by address) or a SharedArrayBuffer. */
export type RegionBacking = { kind: 'host'; hostAddress: bigint } | { kind: 'shared'; buffer: SharedArrayBuffer };

/** Structured-clone-able description of guest memory, to rebuild the same views in a worker thread. */
export interface GuestMemoryDescriptor {
  regions: { guestAddress: number; size: number; backing: RegionBacking; readOnly: boolean }[];
}

/**
 * A range of guest RAM to map. `readOnly` is memory the guest cannot write (the firmware ROM, a
 * KVM_MEM_READONLY slot): the VMM places its contents, but no device may write it on the guest's behalf.
 */
export interface GuestRamRange {
  guestAddress: number;
  size: number;
  readOnly?: boolean;
}

export class MemoryRegion {
  readonly end: number;
  readonly view: DataView;
  /** Host virtual address of the region's first byte, for system calls that take guest RAM directly. */
  readonly hostBase: number | undefined;

  constructor(
    readonly guestAddress: number,
    readonly bytes: Uint8Array,
    readonly backing: RegionBacking,
    readonly readOnly = false,
  ) {
    this.end = guestAddress + bytes.length;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    // User-space addresses on x86-64 are below 2^47: exact as numbers.
    this.hostBase = backing.kind === 'host' ? Number(backing.hostAddress) : undefined;
  }

  get size(): number {
    return this.bytes.length;
  }
}

export class GuestMemory {
  readonly regions: readonly MemoryRegion[];
  private lastRegion: MemoryRegion;

  constructor(regions: MemoryRegion[]) {
    this.regions = [...regions].sort((a, b) => a.guestAddress - b.guestAddress);
    if (this.regions.length === 0) throw new Error('guest memory needs at least one region');
    this.lastRegion = this.regions[0]!;
    for (let i = 1; i < this.regions.length; i++) {
      if (this.regions[i]!.guestAddress < this.regions[i - 1]!.end) {
        throw new Error(`guest memory regions overlap at 0x${this.regions[i]!.guestAddress.toString(16)}`);
      }
    }
  }

  /** RAM backed by anonymous mmaps, one per range, as KVM needs it (KVM_SET_USER_MEMORY_REGION). */
  static anonymous(ranges: readonly GuestRamRange[]): GuestMemory {
    return new GuestMemory(
      ranges.map(({ guestAddress, size, readOnly }) => {
        const hostAddress = mapGuestRam(guestAddress, size);
        return new MemoryRegion(guestAddress, viewAt(hostAddress, size), { kind: 'host', hostAddress }, readOnly);
      }),
    );
  }

  /** RAM in SharedArrayBuffers: no mmap needed, for the mocked KVM and unit tests. */
  static shared(ranges: readonly GuestRamRange[]): GuestMemory {
    return new GuestMemory(
      ranges.map(({ guestAddress, size, readOnly }) => {
        const buffer = new SharedArrayBuffer(size);
        return new MemoryRegion(guestAddress, new Uint8Array(buffer), { kind: 'shared', buffer }, readOnly);
      }),
    );
  }

  static fromDescriptor(d: GuestMemoryDescriptor): GuestMemory {
    return new GuestMemory(
      d.regions.map(
        ({ guestAddress, size, backing, readOnly }) =>
          new MemoryRegion(guestAddress, backing.kind === 'host' ? viewAt(backing.hostAddress, size) : new Uint8Array(backing.buffer), backing, readOnly),
      ),
    );
  }

  descriptor(): GuestMemoryDescriptor {
    return { regions: this.regions.map((r) => ({ guestAddress: r.guestAddress, size: r.size, backing: r.backing, readOnly: r.readOnly })) };
  }

  /** Total RAM in bytes. */
  get size(): number {
    return this.regions.reduce((n, r) => n + r.size, 0);
  }

  /** The region holding [address, address+length), or undefined. Lengths and addresses may be hostile. */
  regionFor(address: number, length: number): MemoryRegion | undefined {
    if (!Number.isSafeInteger(address) || !Number.isSafeInteger(length) || address < 0 || length < 0) return undefined;
    // Consecutive accesses (the segments of one request) nearly always fall in the same region.
    const last = this.lastRegion;
    if (address >= last.guestAddress && address + length <= last.end && address < last.end) return last;
    for (const r of this.regions) {
      if (address >= r.guestAddress && address < r.end) {
        if (address + length > r.end) return undefined;
        this.lastRegion = r;
        return r;
      }
    }
    // A zero-length range at a region's end is still "inside".
    return length === 0 ? this.regions.find((r) => r.end === address) : undefined;
  }

  contains(address: number, length: number): boolean {
    return this.regionFor(address, length) !== undefined;
  }

  /** Whether [address, address+length) lies inside one region the guest may write: where a device may put data. */
  containsWritable(address: number, length: number): boolean {
    const r = this.regionFor(address, length);
    return r !== undefined && !r.readOnly;
  }

  /** Whether every region is an mmap of this process, so that system calls can reach guest RAM by address. */
  get hostMapped(): boolean {
    return this.regions.every((r) => r.hostBase !== undefined);
  }

  /** Appends guest range [address, +length) to `into` by host address; false if it does not fit there. */
  pushIoVector(address: number, length: number, into: IoVectors): boolean {
    const r = this.region(address, length);
    if (r.hostBase === undefined) throw new Error('guest RAM in SharedArrayBuffers has no host address');
    return into.push(r.hostBase + (address - r.guestAddress), length);
  }

  private region(address: number, length: number): MemoryRegion {
    const r = this.regionFor(address, length);
    if (!r) throw new GuestMemoryError(address, length);
    return r;
  }

  /** A zero-copy view of guest memory. Writes through it reach the guest. */
  slice(address: number, length: number): Uint8Array {
    const r = this.region(address, length);
    const start = address - r.guestAddress;
    return r.bytes.subarray(start, start + length);
  }

  read(address: number, length: number): Uint8Array {
    return this.slice(address, length).slice();
  }

  write(address: number, data: Uint8Array): void {
    this.slice(address, data.length).set(data);
  }

  fill(address: number, length: number, value = 0): void {
    this.slice(address, length).fill(value);
  }

  readU8(address: number): number {
    const r = this.region(address, 1);
    return r.view.getUint8(address - r.guestAddress);
  }

  readU16(address: number): number {
    const r = this.region(address, 2);
    return r.view.getUint16(address - r.guestAddress, true);
  }

  readU32(address: number): number {
    const r = this.region(address, 4);
    return r.view.getUint32(address - r.guestAddress, true);
  }

  readU64(address: number): bigint {
    const r = this.region(address, 8);
    return r.view.getBigUint64(address - r.guestAddress, true);
  }

  writeU8(address: number, value: number): void {
    const r = this.region(address, 1);
    r.view.setUint8(address - r.guestAddress, value);
  }

  writeU16(address: number, value: number): void {
    const r = this.region(address, 2);
    r.view.setUint16(address - r.guestAddress, value, true);
  }

  writeU32(address: number, value: number): void {
    const r = this.region(address, 4);
    r.view.setUint32(address - r.guestAddress, value, true);
  }

  writeU64(address: number, value: bigint): void {
    const r = this.region(address, 8);
    r.view.setBigUint64(address - r.guestAddress, value, true);
  }
}

/** The transparent huge page size on x86-64. */
const HUGE_PAGE = 2 << 20;

/**
 * Maps private anonymous RAM for guest range [guestAddress, +size) at a host address congruent to it
 * modulo 2 MiB: only then can KVM back the guest with 2 MiB pages in its nested page tables, and the
 * host kernel give the range transparent huge pages (shared anonymous memory is shmem, which gets none
 * by default). Not inherited across fork: a child process must not make guest RAM copy-on-write.
 */
function mapGuestRam(guestAddress: number, size: number): bigint {
  if (size > MAX_REGION_SIZE) throw new RangeError(`a guest RAM region of ${size} bytes is larger than the ${MAX_REGION_SIZE} one view can hold`);
  const padded = mmapAddress(size + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, 'mmap guest RAM');
  const huge = BigInt(HUGE_PAGE);
  const start = padded + ((((BigInt(guestAddress) - padded) % huge) + huge) % huge);
  const head = Number(start - padded);
  const mapped = Math.ceil(size / PAGE_SIZE) * PAGE_SIZE;
  if (head > 0) munmap({ address: padded, length: head });
  if (HUGE_PAGE - head > 0) munmap({ address: start + BigInt(mapped), length: HUGE_PAGE - head });
  madvise(start, size, MADV_DONTFORK, 'madvise guest RAM MADV_DONTFORK');
  // EINVAL: a kernel without THP; the RAM works the same in 4 KiB pages.
  madvise(start, size, MADV_HUGEPAGE, 'madvise guest RAM MADV_HUGEPAGE');
  return start;
}
