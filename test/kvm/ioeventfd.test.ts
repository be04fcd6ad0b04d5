import { expect } from 'chai';
import { Bus } from '../../src/devices/bus.js';
import { EventFd } from '../../src/sys/eventfd.js';
import { IrqLineInterrupt, IrqfdInterrupt } from '../../src/kvm/interrupts.js';
import { VcpuThreads } from '../../src/kvm/vcpu-threads.js';
import { realModeVm } from './real-mode-vm.js';
import { RecordingDevice } from './recording-device.js';

const ENTRY = 0x1000;

describe('ioeventfd and interrupts on KVM @kvm', () => {
  it('turns matching writes into eventfd signals with no exit, and the rest into bus writes', async () => {
    const code = [
      0xb8,
      0x00,
      0x20,
      0x8e,
      0xd8, //       mov ax, 0x2000 ; mov ds, ax
      0xc7,
      0x06,
      0x50,
      0x00,
      0x03,
      0x00, // mov word [0x50], 3    -> datamatch 3: eventfd
      0xc7,
      0x06,
      0x50,
      0x00,
      0x07,
      0x00, // mov word [0x50], 7    -> no match: MMIO exit
      0xb0,
      0x01,
      0xe6,
      0x40, //             mov al, 1 ; out 0x40, al -> PIO eventfd, any value
      0xb0,
      0x09,
      0xe6,
      0x40, //             mov al, 9 ; out 0x40, al
      0xf4,
    ];
    const guest = realModeVm(code, { entry: ENTRY });
    const mmioNotify = new EventFd();
    const pioNotify = new EventFd();
    guest.vm.ioeventfd(mmioNotify, { space: 'mmio', address: 0x20050, length: 2, datamatch: 3n });
    guest.vm.ioeventfd(pioNotify, { space: 'pio', address: 0x40, length: 1 });
    const window = new RecordingDevice();
    const ports = new RecordingDevice();
    const buses = { pio: new Bus('pio'), mmio: new Bus('mmio') };
    buses.mmio.insert(window, 0x20000, 0x1000, 'window');
    buses.pio.insert(ports, 0x40, 1, 'ports');
    const threads = new VcpuThreads(guest.vcpus, buses);
    threads.start();
    const [stop] = await threads.stopped;
    expect(stop!.reason, stop!.message).to.equal('hlt');
    expect(window.accesses).to.deep.equal([{ op: 'write', offset: 0x50, data: [7, 0] }]);
    expect(ports.accesses).to.deep.equal([]);
    expect(mmioNotify.take()).to.equal(1n);
    expect(pioNotify.take()).to.equal(2n);

    guest.vm.ioeventfdDeassign(mmioNotify, { space: 'mmio', address: 0x20050, length: 2, datamatch: 3n });
    expect(() => guest.vm.ioeventfdDeassign(mmioNotify, { space: 'mmio', address: 0x20050, length: 2, datamatch: 3n })).to.throw(
      /KVM_IOEVENTFD failed: ENOENT — no ioeventfd at mmio 0x20050/,
    );
    mmioNotify.close();
    pioNotify.close();
    guest.close();
  });

  it('binds and unbinds irqfds and pulses IRQ lines on the in-kernel irqchip', () => {
    const guest = realModeVm([0xf4], { entry: ENTRY });
    expect(() => new IrqLineInterrupt(guest.vm, 4).trigger()).to.throw(/KVM_IRQ_LINE failed: ENXIO — no in-kernel irqchip/);
    guest.close();

    const withIrqchip = realModeVm([0xf4], { entry: ENTRY, irqchip: true });
    const irq = new IrqfdInterrupt(withIrqchip.vm, 5);
    irq.trigger();
    expect(() => withIrqchip.vm.irqfd(irq.eventfd, 5)).to.throw(/KVM_IRQFD failed: EBUSY/);
    irq.close();
    new IrqLineInterrupt(withIrqchip.vm, 4).trigger();
    withIrqchip.close();
  });
});
