import { expect } from 'chai';
import { Bus } from '../../src/devices/bus.js';
import { VcpuThreads } from '../../src/kvm/vcpu-threads.js';
import { realModeVm } from './real-mode-vm.js';
import { RecordingDevice } from './recording-device.js';

const CODE_AT = 0x1000;
// 16-bit code, hand-assembled.
const program = [
  0xb0,
  0x42, //             mov al, 0x42
  0xe6,
  0x10, //             out 0x10, al
  0xe4,
  0x11, //             in al, 0x11
  0xa2,
  0x00,
  0x80, //       mov [0x8000], al
  0xb8,
  0x00,
  0x20, //       mov ax, 0x2000
  0x8e,
  0xd8, //             mov ds, ax            ; ds base 0x20000: the MMIO window
  0xc6,
  0x06,
  0x10,
  0x00,
  0x5a, // mov byte [0x10], 0x5a
  0x8a,
  0x1e,
  0x20,
  0x00, // mov bl, [0x20]
  0x31,
  0xc0, //             xor ax, ax
  0x8e,
  0xd8, //             mov ds, ax
  0x88,
  0x1e,
  0x01,
  0x80, // mov [0x8001], bl
  0xf4, //                   hlt
];

describe('real-mode guest on KVM @kvm', () => {
  it('exits exactly for its port and MMIO accesses, with the VMM answers, then halts', async () => {
    const guest = realModeVm(program, { entry: CODE_AT });
    const {
      memory,
      vcpus: [vcpu],
    } = guest;

    const ports = new RecordingDevice(() => [0x99]);
    const mmio = new RecordingDevice(() => [0x77]);
    const buses = { pio: new Bus('pio'), mmio: new Bus('mmio') };
    buses.pio.insert(ports, 0x10, 2, 'ports');
    buses.mmio.insert(mmio, 0x20000, 0x1000, 'window');
    const threads = new VcpuThreads([vcpu!], buses);
    threads.start();
    const [stop] = await threads.stopped;

    expect(stop!.reason, stop!.message).to.equal('hlt');
    expect(stop!.regs!.rip).to.equal(BigInt(CODE_AT + program.length));
    expect(ports.accesses).to.deep.equal([
      { op: 'write', offset: 0, data: [0x42] },
      { op: 'read', offset: 1, data: [0x99] },
    ]);
    expect(mmio.accesses).to.deep.equal([
      { op: 'write', offset: 0x10, data: [0x5a] },
      { op: 'read', offset: 0x20, data: [0x77] },
    ]);
    expect(memory.readU8(0x8000)).to.equal(0x99);
    expect(memory.readU8(0x8001)).to.equal(0x77);
    guest.close();
  });

  it('carries string I/O (rep outsb / rep insb) element by element, in order', async () => {
    const code = [
      0xbe,
      0x00,
      0x90, // mov si, 0x9000
      0xb9,
      0x04,
      0x00, // mov cx, 4
      0xba,
      0x12,
      0x00, // mov dx, 0x12
      0xf3,
      0x6e, //       rep outsb
      0xbf,
      0x00,
      0x91, // mov di, 0x9100
      0xb9,
      0x03,
      0x00, // mov cx, 3
      0xf3,
      0x6c, //       rep insb
      0xf4, //             hlt
    ];
    const guest = realModeVm(code, { entry: CODE_AT });
    guest.memory.write(0x9000, new Uint8Array([1, 2, 3, 4]));
    let next = 0xa0;
    const port = new RecordingDevice(() => [next++]);
    const buses = { pio: new Bus('pio'), mmio: new Bus('mmio') };
    buses.pio.insert(port, 0x10, 4, 'ports');
    const threads = new VcpuThreads(guest.vcpus, buses);
    threads.start();
    const [stop] = await threads.stopped;
    expect(stop!.reason, stop!.message).to.equal('hlt');
    expect(port.accesses).to.deep.equal([
      ...[1, 2, 3, 4].map((b) => ({ op: 'write', offset: 2, data: [b] })),
      ...[0xa0, 0xa1, 0xa2].map((b) => ({ op: 'read', offset: 2, data: [b] })),
    ]);
    expect([...guest.memory.read(0x9100, 3)]).to.deep.equal([0xa0, 0xa1, 0xa2]);
    guest.close();
  });
});
