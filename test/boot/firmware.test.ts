import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { FIRMWARE_IMAGE, HANDOFF_MAGIC, handoffBlock, loadFirmware } from '../../src/boot/firmware.js';
import { FIRMWARE_ADDRESS, FIRMWARE_SIZE, LAUNCH_SECRET_SIZE, LowMemory, MMIO_HOLE_START, Ports } from '../../src/boot/layout.js';
import { prepareBoot } from '../../src/boot/prepare.js';
import { elfKernel } from './elf-fixture.js';
import { BootSegments } from '../../src/boot/boot-tables.js';

const exec = promisify(execFile);
const firmwareDir = fileURLToPath(new URL('../../../firmware/', import.meta.url));

describe('firmware', () => {
  it('rebuilds from firmware/reset.s with binutils to exactly the committed bytes', async function () {
    this.timeout(60_000);
    const dir = await mkdtemp(join(tmpdir(), 'ts-vmm-firmware-'));
    try {
      const out = join(dir, 'firmware.bin');
      await exec('sh', [join(firmwareDir, 'build.sh'), out]);
      const rebuilt = await readFile(out);
      const committed = await readFile(FIRMWARE_IMAGE);
      expect(rebuilt.length).to.equal(FIRMWARE_SIZE);
      expect(rebuilt.equals(committed), 'firmware/ts-vmm-firmware.bin is stale: run firmware/build.sh firmware/ts-vmm-firmware.bin').to.equal(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('uses the same addresses and selectors as the VMM (src/boot/layout.ts)', async () => {
    const source = await readFile(join(firmwareDir, 'reset.s'), 'utf8');
    const constants = new Map([...source.matchAll(/^\s*\.set\s+(\w+),\s*(0x[0-9a-f]+)/gim)].map((m) => [m[1]!, Number(m[2])]));
    expect(constants.get('ROM_BASE')).to.equal(FIRMWARE_ADDRESS);
    expect(constants.get('HANDOFF')).to.equal(LowMemory.handoff);
    expect(constants.get('HANDOFF_MAGIC')).to.equal(HANDOFF_MAGIC);
    expect(constants.get('STACK_TOP')).to.equal(LowMemory.stackTop);
    expect(constants.get('PML4')).to.equal(LowMemory.pml4);
    expect(constants.get('PDPT')).to.equal(LowMemory.pdpt);
    expect(constants.get('PAGE_DIRECTORIES')).to.equal(LowMemory.pageDirectories);
    expect(constants.get('MMIO_HOLE_START')).to.equal(MMIO_HOLE_START);
    expect(constants.get('COM1')).to.equal(Ports.com1);
    expect(constants.get('SEL_CODE64')).to.equal(BootSegments.code64.selector);
    expect(constants.get('SEL_DATA')).to.equal(BootSegments.data.selector);
  });

  it('places its first instruction at the reset vector 0xfffffff0: a near jump back into the ROM', async () => {
    const rom = await loadFirmware();
    expect(rom.guestAddress).to.equal(FIRMWARE_ADDRESS);
    const resetOffset = 0xffff_fff0 - FIRMWARE_ADDRESS;
    expect(rom.bytes[resetOffset]).to.equal(0xe9, 'jmp rel16');
    const target = (0xfff3 + new DataView(rom.bytes.buffer).getInt16(resetOffset + 1, true)) & 0xffff;
    expect(0xffff_0000 + target).to.be.within(FIRMWARE_ADDRESS, FIRMWARE_ADDRESS + FIRMWARE_SIZE - 1);
  });

  it('hand-off block: magic, version 2, kernel entry, zero page and the secret slot (zero when none)', () => {
    const block = handoffBlock(0x100_0200, LowMemory.zeroPage, { guestAddress: 0x7ff_0074, length: LAUNCH_SECRET_SIZE });
    const v = new DataView(block.bytes.buffer);
    expect(block.guestAddress).to.equal(LowMemory.handoff);
    expect(v.getUint32(0, true)).to.equal(HANDOFF_MAGIC);
    expect(v.getUint32(4, true)).to.equal(2);
    expect(v.getBigUint64(8, true)).to.equal(0x100_0200n);
    expect(v.getBigUint64(16, true)).to.equal(BigInt(LowMemory.zeroPage));
    expect(v.getBigUint64(24, true)).to.equal(0x7ff_0074n);
    expect(v.getUint32(32, true)).to.equal(LAUNCH_SECRET_SIZE);
    const none = new DataView(handoffBlock(0x100_0200, LowMemory.zeroPage).bytes.buffer);
    expect([none.getBigUint64(24, true), none.getUint32(32, true)]).to.deep.equal([0n, 0]);
  });

  it('a measured launch with an initrd names a zero-filled slot inside the placed initrd; other boots name none', async () => {
    const kernel = elfKernel({ paddr: 0x100_0000, code: Uint8Array.of(0xf4) });
    const initrd = new Uint8Array(1001).fill(0x5a);
    const inputs = { kernel, initrd, cmdline: '', cpus: 1, memoryMiB: 128, virtioDevices: 0 };
    const measured = await prepareBoot({ ...inputs, entry: 'firmware', launchSecret: true });
    const handoff = new DataView(measured.plan.placements.find((p) => p.what === 'firmware hand-off block')!.bytes.buffer);
    const placed = measured.plan.placements.find((p) => p.what === 'initrd')!;
    const slot = Number(handoff.getBigUint64(24, true));
    expect(handoff.getUint32(32, true)).to.equal(LAUNCH_SECRET_SIZE);
    expect(slot - placed.guestAddress).to.be.within(initrd.length, placed.bytes.length - LAUNCH_SECRET_SIZE);
    expect(placed.bytes.subarray(0, initrd.length)).to.deep.equal(initrd);
    expect(placed.bytes.subarray(slot - placed.guestAddress, slot - placed.guestAddress + LAUNCH_SECRET_SIZE).every((b) => b === 0)).to.equal(true);
    for (const other of [{ entry: 'firmware' as const }, { entry: 'direct' as const, launchSecret: true }]) {
      const boot = await prepareBoot({ ...inputs, ...other });
      expect(boot.plan.placements.find((p) => p.what === 'initrd')!.bytes).to.deep.equal(initrd);
    }
  });

  it('refuses a ROM image that is not exactly one page', async () => {
    await loadFirmware(join(firmwareDir, 'reset.s')).then(
      () => expect.fail(),
      (e: Error) => expect(e.message).to.match(/exactly 4096/),
    );
  });
});
