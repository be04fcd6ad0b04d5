import { expect } from 'chai';
import { ElfError, PT_LOAD, readElf64Headers } from '../../src/boot/elf64.js';
import { elfKernel } from './elf-fixture.js';

describe('ELF64 headers', () => {
  it('reads the entry point, the machine and the program headers', () => {
    const file = elfKernel({ paddr: 0x20_0000, code: Uint8Array.of(0xf4, 0xf4), memsz: 0x1000 });
    const elf = readElf64Headers(file, 'fixture');
    expect(elf.entry).to.equal(0x20_0000);
    expect(elf.machine).to.equal(62);
    expect(elf.programHeaders).to.deep.equal([{ type: PT_LOAD, offset: 120, paddr: 0x20_0000, filesz: 2, memsz: 0x1000 }]);
  });

  it('names the file and the problem: not ELF, truncated, 32-bit, values beyond 2^53', () => {
    const good = elfKernel({ paddr: 0x20_0000, code: Uint8Array.of(0xf4) });
    expect(() => readElf64Headers(new Uint8Array(100), 'x.bin')).to.throw(ElfError, 'x.bin is not an ELF file');
    expect(() => readElf64Headers(good.subarray(0, 40), 'x.bin')).to.throw(ElfError, 'x.bin truncated inside its header (40 bytes)');
    expect(() => readElf64Headers(good.subarray(0, 100), 'x.bin')).to.throw(ElfError, 'x.bin truncated inside its program headers');
    const class32 = good.slice();
    class32[4] = 1;
    expect(() => readElf64Headers(class32, 'x.bin')).to.throw(ElfError, 'x.bin is not 64-bit little-endian');
    const huge = good.slice();
    new DataView(huge.buffer).setBigUint64(64 + 8, 1n << 60n, true);
    expect(() => readElf64Headers(huge, 'x.bin')).to.throw(ElfError, 'x.bin segment offset 0x1000000000000000 is out of range');
  });
});
