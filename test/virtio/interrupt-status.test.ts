import { expect } from 'chai';
import { Bus } from '../../src/devices/bus.js';
import { VcpuThreads } from '../../src/kvm/vcpu-threads.js';
import { VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING } from '../../src/virtio/abi.js';
import { InterruptStatus, interruptRegisters, interruptRegistersRange } from '../../src/virtio/interrupt-status.js';
import { RecordingDevice } from '../kvm/recording-device.js';
import { realModeVm } from '../kvm/real-mode-vm.js';

const word = (value: number) => new Uint8Array(new Uint32Array([value]).buffer);
const read = (device: ReturnType<typeof interruptRegisters>, offset: number, size = 4) => {
  const data = new Uint8Array(size).fill(0xee);
  device.read(offset, data);
  return size === 4 ? new DataView(data.buffer).getUint32(0, true) : [...data];
};

describe('virtio-mmio interrupt status word', () => {
  it('is one word for every thread: causes raised through one view are read and acknowledged through another', () => {
    const device = new InterruptStatus();
    const vcpuSide = interruptRegisters(new InterruptStatus(device.buffer));
    device.raise(VIRTIO_MMIO_INT_VRING);
    device.raise(VIRTIO_MMIO_INT_CONFIG);
    expect(read(vcpuSide, 0)).to.equal(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
    vcpuSide.write(4, word(VIRTIO_MMIO_INT_VRING));
    expect(device.read()).to.equal(VIRTIO_MMIO_INT_CONFIG);
    device.clear();
    expect(read(vcpuSide, 0)).to.equal(0);
  });

  it('keeps a cause raised after the read its ACK answers', () => {
    const status = new InterruptStatus();
    status.raise(VIRTIO_MMIO_INT_VRING);
    const seen = status.read();
    status.raise(VIRTIO_MMIO_INT_VRING);
    status.acknowledge(seen);
    expect(status.read(), 'the second interrupt finds its cause').to.equal(VIRTIO_MMIO_INT_VRING);
    status.acknowledge(VIRTIO_MMIO_INT_VRING);
    expect(status.read()).to.equal(0);
  });

  it('answers only aligned 32-bit accesses of its two registers: other reads are 0, other writes vanish', () => {
    const status = new InterruptStatus();
    const registers = interruptRegisters(status);
    status.raise(VIRTIO_MMIO_INT_VRING);
    expect(read(registers, 0, 2)).to.deep.equal([0, 0]);
    expect(read(registers, 4)).to.equal(0, 'InterruptACK is write-only');
    registers.write(0, word(VIRTIO_MMIO_INT_VRING));
    registers.write(4, new Uint8Array([VIRTIO_MMIO_INT_VRING]));
    expect(status.read()).to.equal(VIRTIO_MMIO_INT_VRING);
  });
});

describe('virtio-mmio interrupt status in the vCPU thread @kvm', () => {
  it('answers the driver read and ACK inside the vCPU thread, never reaching the device thread', async () => {
    // mov ax,0x2000 ; mov ds,ax ; mov eax,[0x60] ; mov [0x64],eax ; mov ebx,[0x60] ;
    // xor cx,cx ; mov ds,cx ; mov [0x8000],eax ; mov [0x8004],ebx ; hlt
    const code = [
      0xb8, 0x00, 0x20, 0x8e, 0xd8, 0x66, 0xa1, 0x60, 0x00, 0x66, 0xa3, 0x64, 0x00, 0x66, 0x8b, 0x1e, 0x60, 0x00, 0x31, 0xc9, 0x8e, 0xd9, 0x66, 0xa3, 0x00,
      0x80, 0x66, 0x89, 0x1e, 0x04, 0x80, 0xf4,
    ];
    const guest = realModeVm(code);
    const status = new InterruptStatus();
    status.raise(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
    const buses = { pio: new Bus('pio'), mmio: new Bus('mmio') };
    const transport = new RecordingDevice();
    buses.mmio.insert(transport, 0x20000, 0x1000, 'virtio-mmio window');
    const threads = new VcpuThreads(guest.vcpus, buses, { localRanges: [interruptRegistersRange(0x20000, status, 'test')] });
    threads.start();
    const [stop] = await threads.stopped;
    expect(stop!.reason, stop!.message).to.equal('hlt');
    expect(guest.memory.readU32(0x8000)).to.equal(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
    expect(guest.memory.readU32(0x8004), 'read again after the ACK').to.equal(0);
    expect(transport.accesses).to.deep.equal([]);
    guest.close();
  });
});
