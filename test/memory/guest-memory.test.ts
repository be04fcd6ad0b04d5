import { expect } from 'chai';
import fs from 'node:fs';
import { maxGuestMemoryMiB, MiB, ramRanges } from '../../src/boot/layout.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { MAX_REGION_SIZE } from '../../src/memory/limits.js';

const HUGE_PAGE = 2 << 20;

/** The VmFlags of the /proc/self/smaps entry that starts at `address`. */
function vmFlags(address: bigint): string[] {
  const smaps = fs.readFileSync('/proc/self/smaps', 'utf8');
  const start = smaps.indexOf(`${address.toString(16)}-`);
  expect(start, `no mapping at 0x${address.toString(16)}`).to.be.at.least(0);
  const flags = /VmFlags:([^\n]*)/.exec(smaps.slice(start))!;
  return flags[1]!.trim().split(/\s+/);
}

describe('guest memory', () => {
  it('maps anonymous RAM private, not inherited by fork, huge-page advised, congruent with the guest address modulo 2 MiB', () => {
    const memory = GuestMemory.anonymous([
      { guestAddress: 0, size: 4 << 20 },
      { guestAddress: 0x1_0000_0000 + 0x1000, size: 0x3000 },
    ]);
    for (const region of memory.regions) {
      if (region.backing.kind !== 'host') throw new Error('expected mmap-backed RAM');
      const host = region.backing.hostAddress;
      expect(Number(host % BigInt(HUGE_PAGE)), `region at 0x${region.guestAddress.toString(16)}`).to.equal(region.guestAddress % HUGE_PAGE);
      const flags = vmFlags(host);
      expect(flags).to.include.members(['rd', 'wr', 'dc']);
      expect(flags, 'shared mapping').to.not.include('sh');
      // hg only where the kernel has transparent huge pages.
      if (fs.existsSync('/sys/kernel/mm/transparent_hugepage/enabled')) expect(flags).to.include('hg');
    }
    memory.write(0x1_0000_1000 + 0x2fff, new Uint8Array([0x5a]));
    expect(memory.read(0x1_0000_1000 + 0x2fff, 1)[0]).to.equal(0x5a);
  });

  it('keeps a guest address out of RAM from reaching host memory', () => {
    const memory = GuestMemory.anonymous([{ guestAddress: 0x20_0000, size: 0x2000 }]);
    expect(() => memory.read(0x20_0000 + 0x1fff, 2)).to.throw(/not inside guest RAM/);
    expect(() => memory.write(0x1f_ffff, new Uint8Array(1))).to.throw(/not inside guest RAM/);
  });

  it('maps the largest guest the layout allows, up to the last byte, and refuses a larger region with a RangeError', () => {
    // MAP_NORESERVE: only the pages touched here are ever allocated.
    const ranges = ramRanges(maxGuestMemoryMiB() * MiB);
    const memory = GuestMemory.anonymous(ranges);
    const last = ranges.at(-1)!;
    memory.writeU8(last.guestAddress + last.size - 1, 0xa5);
    expect(memory.readU8(last.guestAddress + last.size - 1)).to.equal(0xa5);
    expect(() => GuestMemory.anonymous([{ guestAddress: 0x1_0000_0000, size: MAX_REGION_SIZE + 0x1000 }])).to.throw(
      RangeError,
      /larger than the \d+ one view can hold/,
    );
  });

  it('knows its read-only ranges, in this thread and in a copy rebuilt from its descriptor', () => {
    const memory = GuestMemory.anonymous([
      { guestAddress: 0, size: 0x10000 },
      { guestAddress: 0xffff_0000, size: 0x10000, readOnly: true },
    ]);
    for (const m of [memory, GuestMemory.fromDescriptor(memory.descriptor())]) {
      expect(m.containsWritable(0x1000, 0x1000)).to.equal(true);
      expect(m.contains(0xffff_0000, 0x10)).to.equal(true);
      expect(m.containsWritable(0xffff_0000, 0x10), 'read-only').to.equal(false);
      expect(m.containsWritable(0x20000, 1), 'outside RAM').to.equal(false);
    }
  });
});
