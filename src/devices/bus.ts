// An address space of devices (port I/O or MMIO). A vCPU exit at an address is routed to the device
// whose range holds it, with the offset inside that range.

/** A device on a bus. `data.length` is the access size (1, 2, 4 or 8); reads fill `data`. */
export interface BusDevice {
  read(offset: number, data: Uint8Array): void;
  write(offset: number, data: Uint8Array): void;
}

export interface BusRange {
  readonly base: number;
  readonly size: number;
  readonly name: string;
  readonly device: BusDevice;
}

export class BusConflictError extends Error {}

export class Bus {
  private ranges: BusRange[] = [];

  constructor(readonly name: string) {}

  insert(device: BusDevice, base: number, size: number, name: string): void {
    if (size <= 0) throw new BusConflictError(`${this.name}: ${name} has an empty range`);
    const clash = this.ranges.find((r) => base < r.base + r.size && r.base < base + size);
    if (clash) {
      throw new BusConflictError(
        `${this.name}: ${name} at 0x${base.toString(16)}+0x${size.toString(16)} overlaps ${clash.name} at 0x${clash.base.toString(16)}`,
      );
    }
    this.ranges.push({ base, size, name, device });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  remove(name: string): void {
    this.ranges = this.ranges.filter((r) => r.name !== name);
  }

  list(): readonly BusRange[] {
    return this.ranges;
  }

  /** Binary search for the range holding `address`. */
  find(address: number): BusRange | undefined {
    let lo = 0;
    let hi = this.ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.ranges[mid]!;
      if (address < r.base) hi = mid - 1;
      else if (address >= r.base + r.size) lo = mid + 1;
      else return r;
    }
    return undefined;
  }

  /** Returns false when no device claims the address (the caller decides what an unclaimed access does). */
  read(address: number, data: Uint8Array): boolean {
    const r = this.find(address);
    if (!r) return false;
    r.device.read(address - r.base, data);
    return true;
  }

  write(address: number, data: Uint8Array): boolean {
    const r = this.find(address);
    if (!r) return false;
    r.device.write(address - r.base, data);
    return true;
  }
}
