import { expect } from 'chai';
import fc from 'fast-check';
import { E820Type, ZeroPage } from '../../src/boot/boot-params-abi.js';
import { planBoot, placeBootPlan, type BootPlan } from '../../src/boot/boot-plan.js';
import { e820Map } from '../../src/boot/e820.js';
import { KernelImageError, parseKernelImage } from '../../src/boot/kernel-image.js';
import { FOUR_GIB, GiB, LowMemory, MiB, MMIO_HOLE_START, ramRanges } from '../../src/boot/layout.js';
import { deviceCmdline, prepareBoot, virtioSlots } from '../../src/boot/prepare.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { elfKernel } from './elf-fixture.js';

const kernel = parseKernelImage(elfKernel({ paddr: 0x100_0000, code: new Uint8Array(0x1000).fill(0x90) }));

function plan(memoryMiB: number, initrd?: Uint8Array, cmdline = 'console=ttyS0'): BootPlan {
  return planBoot({ kernel, initrd, cmdline, ram: ramRanges(memoryMiB * MiB), rsdp: LowMemory.acpi, extra: [], firmware: false });
}

describe('e820 map', () => {
  it('is sorted, non-overlapping, and its RAM is exactly guest RAM minus the BIOS area, for any size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 64, max: 16 * 1024 }), fc.boolean(), (mib, firmware) => {
        const ram = ramRanges(mib * MiB);
        const map = e820Map(ram, { firmware });
        for (let i = 1; i < map.length; i++) expect(map[i]!.addr).to.be.at.least(map[i - 1]!.addr + map[i - 1]!.size);
        const usable = map.filter((e) => e.type === E820Type.RAM).reduce((n, e) => n + e.size, 0);
        expect(usable).to.equal(mib * MiB - (LowMemory.highMemory - LowMemory.ebdaStart));
        for (const e of map.filter((x) => x.type === E820Type.RAM)) {
          const inHole = e.addr < FOUR_GIB && e.addr + e.size > MMIO_HOLE_START;
          expect(inHole, `RAM entry at 0x${e.addr.toString(16)} reaches into the MMIO hole`).to.equal(false);
        }
      }),
    );
  });

  it('splits RAM larger than the hole around it, continuing at 4 GiB', () => {
    const map = e820Map(ramRanges(4 * 1024 * MiB), { firmware: false });
    expect(map.at(-1)).to.deep.equal({ addr: FOUR_GIB, size: 4 * GiB - MMIO_HOLE_START, type: E820Type.RAM });
    expect(map.at(-2)).to.deep.equal({ addr: LowMemory.highMemory, size: MMIO_HOLE_START - LowMemory.highMemory, type: E820Type.RAM });
  });
});

describe('boot plan and zero page', () => {
  it('fills the zero page: loader type, command line, initrd, RSDP and the e820 table', () => {
    const initrd = new Uint8Array(123_456).fill(7);
    const p = plan(256, initrd);
    const zp = p.placements.find((x) => x.what === 'zero page')!;
    const v = new DataView(zp.bytes.buffer);
    expect(zp.guestAddress).to.equal(LowMemory.zeroPage);
    expect(v.getUint8(ZeroPage.hdr('type_of_loader'))).to.equal(0xff);
    expect(v.getUint16(ZeroPage.hdr('boot_flag'), true)).to.equal(0xaa55);
    expect(v.getUint32(ZeroPage.hdr('cmd_line_ptr'), true)).to.equal(LowMemory.cmdline);
    expect(v.getUint32(ZeroPage.hdr('ramdisk_image'), true)).to.equal(p.initrd!.guestAddress);
    expect(v.getUint32(ZeroPage.hdr('ramdisk_size'), true)).to.equal(initrd.length);
    expect(v.getBigUint64(ZeroPage.acpiRsdpAddr, true)).to.equal(BigInt(LowMemory.acpi));
    expect(v.getUint8(ZeroPage.e820Entries)).to.equal(p.e820.length);
    expect(v.getBigUint64(ZeroPage.e820Table + 20 * 2 + 8, true)).to.equal(BigInt(p.e820[2]!.size));
    const cmdline = p.placements.find((x) => x.what === 'command line')!;
    expect(Buffer.from(cmdline.bytes).toString()).to.equal('console=ttyS0\0');
  });

  it('puts the initrd page-aligned at the top of RAM below the hole, clear of the kernel', () => {
    const initrd = new Uint8Array(5 * MiB + 3);
    const p = plan(8 * 1024, initrd);
    expect(p.initrd!.guestAddress % 4096).to.equal(0);
    expect(p.initrd!.guestAddress + initrd.length).to.be.at.most(MMIO_HOLE_START);
    expect(MMIO_HOLE_START - (p.initrd!.guestAddress + initrd.length)).to.be.below(4096);
  });

  it('respects the bzImage initrd_addr_max', () => {
    const bz = {
      kind: 'bzImage' as const,
      setupHeader: new Uint8Array(0x70),
      protocolVersion: 0x020f,
      loadAddress: 0x100_0000,
      entry: 0x100_0200,
      initSize: 0x100_0000,
      initrdAddrMax: 0x37ff_ffff,
      cmdlineMax: 2047,
      canLoadAbove4G: false,
      segments: kernel.segments,
    };
    const p = planBoot({ kernel: bz, initrd: new Uint8Array(4096), cmdline: '', ram: ramRanges(2048 * MiB), rsdp: LowMemory.acpi, extra: [], firmware: false });
    expect(p.initrd!.guestAddress + 4096).to.equal(0x3800_0000);
  });

  it('refuses memory too small for kernel and initrd, and a command line longer than the kernel takes', () => {
    expect(() => plan(64, new Uint8Array(60 * MiB))).to.throw(KernelImageError, /too small for the initrd/);
    expect(() => plan(64, undefined, 'x'.repeat(3000))).to.throw(KernelImageError, /accepts at most 2047/);
  });

  it('writes every placement into guest memory', () => {
    const p = plan(64, Uint8Array.of(1, 2, 3));
    const memory = GuestMemory.shared(ramRanges(64 * MiB));
    placeBootPlan(memory, p);
    expect([...memory.read(p.initrd!.guestAddress, 3)]).to.deep.equal([1, 2, 3]);
    expect(memory.readU16(LowMemory.zeroPage + ZeroPage.hdr('boot_flag'))).to.equal(0xaa55);
  });
});

describe('prepared boot', () => {
  it('keeps the user command line as given and appends one virtio_mmio.device= per device', () => {
    expect(deviceCmdline('console=ttyS0 quiet', virtioSlots(2))).to.equal(
      'console=ttyS0 quiet virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6',
    );
    expect(deviceCmdline('root=/dev/vda', [])).to.equal('root=/dev/vda');
  });

  it('lists every byte placed before launch, without overlaps, for both entry paths', async () => {
    for (const entry of ['direct', 'firmware'] as const) {
      const prepared = await prepareBoot({
        kernel: elfKernel({ paddr: 0x100_0000, code: Uint8Array.of(0xf4) }),
        cmdline: '',
        cpus: 2,
        memoryMiB: 128,
        virtioDevices: 1,
        entry,
      });
      const names = prepared.plan.placements.map((p) => p.what);
      expect(names).to.include.members([
        'kernel',
        'command line',
        'zero page',
        'ACPI RSDP',
        'ACPI DSDT',
        'ACPI FADT',
        'ACPI MADT',
        'ACPI XSDT',
        'BIOS reset vector',
      ]);
      if (entry === 'firmware') expect(names).to.include.members(['firmware', 'firmware hand-off block']);
      else expect(names).to.include.members(['GDT', 'IDT', 'PML4', 'PDPT', 'page directories']);
      const spans = prepared.plan.placements.map((p) => [p.guestAddress, p.guestAddress + p.bytes.length] as const).sort((a, b) => a[0] - b[0]);
      for (let i = 1; i < spans.length; i++) expect(spans[i]![0]).to.be.at.least(spans[i - 1]![1]);
    }
  });

  it('answers a real-mode reboot at f000:fff0 with a keyboard-controller reset, as a BIOS would', async () => {
    const prepared = await prepareBoot({
      kernel: elfKernel({ paddr: 0x100_0000, code: Uint8Array.of(0xf4) }),
      cmdline: '',
      cpus: 1,
      memoryMiB: 64,
      virtioDevices: 0,
      entry: 'direct',
    });
    const reset = prepared.plan.placements.find((p) => p.what === 'BIOS reset vector')!;
    expect(reset.guestAddress).to.equal(0xf_0000 + 0xfff0);
    // mov $0xfe, %al; out %al, $0x64; hlt; jmp back to the out
    expect([...reset.bytes]).to.deep.equal([0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfb]);
    const e820 = prepared.plan.e820.find((e) => e.addr <= reset.guestAddress && reset.guestAddress < e.addr + e.size)!;
    expect(e820.type).to.equal(E820Type.RESERVED);
  });

  it('rejects vCPU and memory counts out of range', async () => {
    const base = { kernel: elfKernel({ paddr: 0x100_0000, code: Uint8Array.of(0xf4) }), cmdline: '', virtioDevices: 0, entry: 'direct' as const };
    await prepareBoot({ ...base, cpus: 0, memoryMiB: 128 }).then(
      () => expect.fail(),
      (e: Error) => expect(e.message).to.match(/--cpus/),
    );
    await prepareBoot({ ...base, cpus: 1, memoryMiB: 32 }).then(
      () => expect.fail(),
      (e: Error) => expect(e.message).to.match(/--mem/),
    );
  });
});
