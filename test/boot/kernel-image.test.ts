import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { ensureDebianKernel } from '../../src/assets/debian.js';
import { SETUP_HEADER_OFFSET, ZeroPage } from '../../src/boot/boot-params-abi.js';
import { KernelImageError, MIN_BOOT_PROTOCOL, parseKernelImage, type BzImageKernel } from '../../src/boot/kernel-image.js';
import { elfKernel } from './elf-fixture.js';

describe('kernel image: the stock Debian bzImage', function () {
  this.timeout(300_000);
  let image: Uint8Array;
  let kernel: BzImageKernel;

  before(async () => {
    image = new Uint8Array(await readFile((await ensureDebianKernel()).vmlinuz));
    const parsed = parseKernelImage(image);
    if (parsed.kind !== 'bzImage') throw new Error('the Debian kernel should parse as a bzImage');
    kernel = parsed;
  });

  it('is a 64-bit relocatable bzImage of a recent boot protocol, entered at load address + 0x200', () => {
    expect(kernel.protocolVersion).to.be.at.least(MIN_BOOT_PROTOCOL);
    expect(kernel.entry).to.equal(kernel.loadAddress + 0x200);
    expect(kernel.loadAddress).to.equal(0x100_0000, 'pref_address = LOAD_PHYSICAL_ADDR on x86-64');
    expect(kernel.initSize).to.be.greaterThan(kernel.segments[0]!.bytes.length);
    expect(kernel.cmdlineMax).to.equal(2047);
  });

  it('copies the setup header exactly as the image declares it (up to the end the jump at 0x200 gives)', () => {
    const end = 0x202 + image[0x201]!;
    expect(kernel.setupHeader).to.deep.equal(image.slice(SETUP_HEADER_OFFSET, end));
    expect(SETUP_HEADER_OFFSET + kernel.setupHeader.length).to.be.at.least(ZeroPage.hdr('init_size') + 4);
  });

  const setupBytes = (): number => ((image[0x1f1] || 4) + 1) * 512;
  const protectedModeBytes = (): number => new DataView(image.buffer, image.byteOffset).getUint32(ZeroPage.hdr('syssize'), true) * 16;

  it('loads the protected-mode part: syssize paragraphs after the setup sectors', () => {
    const segment = kernel.segments[0]!;
    expect(segment.bytes.length).to.equal(protectedModeBytes());
    expect(setupBytes() + segment.bytes.length).to.be.at.most(image.length);
    expect(segment.bytes[0]).to.equal(image[setupBytes()]);
  });

  it('rejects the image truncated anywhere, naming the truncation', () => {
    for (const length of [0x100, 0x230, 0x1000, setupBytes() + protectedModeBytes() - 1]) {
      expect(() => parseKernelImage(image.subarray(0, length)), `length ${length}`).to.throw(KernelImageError, /truncated|neither/);
    }
  });

  it('rejects a protocol older than 2.12 and an image without a 64-bit entry', () => {
    const old = image.slice(0, 0x4000);
    new DataView(old.buffer).setUint16(ZeroPage.hdr('version'), 0x020a, true);
    expect(() => parseKernelImage(old)).to.throw(KernelImageError, /2\.10 is too old/);
    const no64 = image.slice();
    const v = new DataView(no64.buffer);
    v.setUint16(ZeroPage.hdr('xloadflags'), v.getUint16(ZeroPage.hdr('xloadflags'), true) & ~1, true);
    expect(() => parseKernelImage(no64)).to.throw(KernelImageError, /XLF_KERNEL_64/);
  });
});

describe('kernel image: recognition and ELF vmlinux', () => {
  it('refuses a file that is neither a bzImage nor an ELF', () => {
    expect(() => parseKernelImage(new Uint8Array(4096).fill(0x90))).to.throw(KernelImageError, /neither a bzImage/);
    expect(() => parseKernelImage(new Uint8Array(0))).to.throw(KernelImageError, /neither/);
  });

  it('loads PT_LOAD segments at their physical addresses and enters at e_entry', () => {
    const code = Uint8Array.of(0xf4);
    const kernel = parseKernelImage(elfKernel({ paddr: 0x20_0000, code, memsz: 0x3000 }));
    expect(kernel.kind).to.equal('elf');
    expect(kernel.entry).to.equal(0x20_0000);
    expect(kernel.segments).to.have.length(1);
    expect(kernel.segments[0]!.guestAddress).to.equal(0x20_0000);
    expect([...kernel.segments[0]!.bytes]).to.deep.equal([0xf4]);
    expect(kernel.segments[0]!.zeroFill).to.equal(0x3000 - 1);
  });

  it('rejects ELF files that are 32-bit, for another machine, truncated, or enter outside their code', () => {
    const good = elfKernel({ paddr: 0x20_0000, code: Uint8Array.of(0xf4) });
    const class32 = good.slice();
    class32[4] = 1;
    expect(() => parseKernelImage(class32)).to.throw(KernelImageError, /64-bit/);
    const arm = good.slice();
    new DataView(arm.buffer).setUint16(18, 183, true);
    expect(() => parseKernelImage(arm)).to.throw(KernelImageError, /machine 183/);
    expect(() => parseKernelImage(good.subarray(0, good.length - 1))).to.throw(KernelImageError, /truncated/);
    expect(() => parseKernelImage(elfKernel({ paddr: 0x20_0000, code: Uint8Array.of(0xf4), entry: 0x30_0000 }))).to.throw(
      KernelImageError,
      /not inside a loaded segment/,
    );
  });
});
