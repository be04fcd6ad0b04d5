import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { VIRTIO_ID_BLOCK, VIRTIO_ID_VSOCK, VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_MAGIC_VALUE } from '../../src/virtio/abi.js';
import { parseDiskOption, parseVsockOption } from '../../src/cli/device-options.js';
import { createVirtioMmioDevice } from '../../src/virtio/factory.js';
import { tempImage } from './blk-fixture.js';
import { InterruptCounter, TestDriver } from './driver.js';

describe('virtio device factory', () => {
  it('parses --disk FILE[,ro] and --vsock CID,UDS_PATH, rejecting malformed values', () => {
    expect(parseDiskOption('/a/b.img')).to.deep.equal({ kind: 'blk', path: '/a/b.img', readOnly: false });
    expect(parseDiskOption('/a/b.img,ro')).to.deep.equal({ kind: 'blk', path: '/a/b.img', readOnly: true });
    expect(() => parseDiskOption(',ro')).to.throw(/expected FILE or FILE,ro/);
    expect(parseVsockOption('3,/tmp/v.sock')).to.deep.equal({ kind: 'vsock', guestCid: 3, udsPath: '/tmp/v.sock' });
    expect(() => parseVsockOption('/tmp/v.sock')).to.throw(/expected CID,UDS_PATH/);
    expect(() => parseVsockOption('2,/tmp/v.sock')).to.throw(/between 3 and/);
  });

  it('builds a block and a vsock device behind virtio-mmio transports, and releases them', async () => {
    const memory = GuestMemory.shared([{ guestAddress: 0, size: 1 << 20 }]);
    const file = tempImage(1 << 20);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-vmm-factory-'));
    const uds = path.join(dir, 'v.sock');
    const blk = await createVirtioMmioDevice(parseDiskOption(`${file},ro`), { memory, interrupt: new InterruptCounter(), baseAddress: 0xd000_0000 });
    const vsock = await createVirtioMmioDevice(parseVsockOption(`7,${uds}`), { memory, interrupt: new InterruptCounter(), baseAddress: 0xd000_1000 });
    try {
      for (const [d, id] of [
        [blk, VIRTIO_ID_BLOCK],
        [vsock, VIRTIO_ID_VSOCK],
      ] as const) {
        const driver = new TestDriver(d.transport, memory);
        expect(driver.read(VIRTIO_MMIO_MAGIC_VALUE)).to.equal(0x74726976);
        expect(driver.read(VIRTIO_MMIO_DEVICE_ID)).to.equal(id);
        expect(d.size).to.equal(0x1000);
      }
      expect(fs.statSync(uds).isSocket()).to.equal(true);
    } finally {
      await blk.close();
      await vsock.close();
    }
    expect(() => fs.fstatSync((blk.device as unknown as { image: { fd: number } }).image.fd)).to.throw(/EBADF/);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  });
});
