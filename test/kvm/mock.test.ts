import { expect } from 'chai';
import fc from 'fast-check';
import { Bus, type BusDevice } from '../../src/devices/bus.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { EventFd } from '../../src/sys/eventfd.js';
import { IrqLineInterrupt, IrqfdInterrupt } from '../../src/kvm/interrupts.js';
import { MockVm } from './mock/mock-vm.js';
import type { ScriptStep } from './mock/mock-vcpu.js';
import { createVcpuRunner } from './inline/runner.js';
import { KVM_SYSTEM_EVENT_RESET } from '../../src/kvm/constants.js';
import { RecordingDevice } from './recording-device.js';

const buses = () => ({ pio: new Bus('pio'), mmio: new Bus('mmio') });

describe('mocked KVM', () => {
  it('dispatches scripted exits to the buses and records the answers to reads', async () => {
    const vm = new MockVm();
    const b = buses();
    const uart = new RecordingDevice(() => [0x60]);
    const window = new RecordingDevice((offset) => [offset & 0xff, 0xbe, 0xba, 0xfe]);
    b.pio.insert(uart, 0x3f8, 8, 'uart');
    b.mmio.insert(window, 0xd000_0000, 0x1000, 'window');
    const vcpu = vm
      .createVcpu(0)
      .push(
        { mmio: 'write', address: 0xd000_0010, size: 4, value: 0x1234_5678 },
        { io: 'in', port: 0x3fd, size: 1 },
        { mmio: 'read', address: 0xd000_0020, size: 4 },
        { io: 'out', port: 0x3f8, size: 1, value: 0x41 },
      );
    const runner = createVcpuRunner([vcpu], b);
    runner.start();
    const [stop] = await runner.stopped;
    expect(stop!.reason).to.equal('hlt');
    expect(window.accesses).to.deep.equal([
      { op: 'write', offset: 0x10, data: [0x78, 0x56, 0x34, 0x12] },
      { op: 'read', offset: 0x20, data: [0x20, 0xbe, 0xba, 0xfe] },
    ]);
    expect(uart.accesses).to.deep.equal([
      { op: 'read', offset: 5, data: [0x60] },
      { op: 'write', offset: 0, data: [0x41] },
    ]);
    expect(vcpu.answers()).to.deep.equal([0x60n, 0xfebabe20n]);
  });

  it('answers unclaimed reads with all ones', async () => {
    const vm = new MockVm();
    const vcpu = vm.createVcpu(0).push({ io: 'in', port: 0x80, size: 2 }, { mmio: 'read', address: 0x1000, size: 8 });
    const runner = createVcpuRunner([vcpu], buses());
    runner.start();
    await runner.stopped;
    expect(vcpu.answers()).to.deep.equal([0xffffn, 0xffff_ffff_ffff_ffffn]);
  });

  it('signals a matching ioeventfd instead of exiting, as KVM does', async () => {
    const vm = new MockVm();
    const b = buses();
    const notify = new RecordingDevice();
    b.mmio.insert(notify, 0xd000_0000, 0x1000, 'virtio');
    const queueNotify = new EventFd();
    vm.ioeventfd(queueNotify, { space: 'mmio', address: 0xd000_0050, length: 4, datamatch: 1n });
    const vcpu = vm
      .createVcpu(0)
      .push(
        { mmio: 'write', address: 0xd000_0050, size: 4, value: 1 },
        { mmio: 'write', address: 0xd000_0050, size: 4, value: 2 },
        { mmio: 'write', address: 0xd000_0050, size: 4, value: 1 },
      );
    const runner = createVcpuRunner([vcpu], b);
    runner.start();
    await runner.stopped;
    expect(queueNotify.take()).to.equal(2n);
    expect(notify.accesses).to.deep.equal([{ op: 'write', offset: 0x50, data: [2, 0, 0, 0] }]);
    expect(() => vm.ioeventfd(queueNotify, { space: 'mmio', address: 0xd000_0050, length: 4, datamatch: 1n })).to.throw(/EEXIST/);
    queueNotify.close();
  });

  it('records irqfd and IRQ line interrupts', () => {
    const vm = new MockVm();
    expect(() => new IrqLineInterrupt(vm, 4).trigger()).to.throw(/KVM_IRQ_LINE failed: ENXIO/);
    vm.createIrqchip();
    const irqfd = new IrqfdInterrupt(vm, 10);
    irqfd.trigger();
    irqfd.trigger();
    expect(vm.takeIrqfdSignals(10)).to.equal(2);
    expect(vm.takeIrqfdSignals(10)).to.equal(0);
    new IrqLineInterrupt(vm, 4).trigger();
    expect(vm.irqLineCalls).to.deep.equal([
      { irq: 4, level: true },
      { irq: 4, level: false },
    ]);
    irqfd.close();
    expect(vm.irqfds.size).to.equal(0);
  });

  it('turns the stopping exits into stops with a reason, and keeps register state', async () => {
    const vm = new MockVm();
    const [a, c] = [vm.createVcpu(0), vm.createVcpu(1)];
    a.push({ exit: { kind: 'system-event', type: KVM_SYSTEM_EVENT_RESET, data: [] } });
    c.push({ exit: { kind: 'shutdown' } });
    c.setRegs({ ...c.getRegs(), rip: 0xffff_ffff_8100_0000n });
    const runner = createVcpuRunner([a, c], buses());
    runner.start();
    const stops = await runner.stopped;
    expect(stops.map((s) => [s.reason, s.message])).to.deep.equal([
      ['system-event', 'vCPU 0: system event reset (KVM_EXIT_SYSTEM_EVENT)'],
      ['shutdown', 'vCPU 1: shutdown (triple fault or reset request, KVM_EXIT_SHUTDOWN)'],
    ]);
    expect(stops[0]!.systemEvent).to.equal(KVM_SYSTEM_EVENT_RESET);
    expect(stops[1]!.regs!.rip).to.equal(0xffff_ffff_8100_0000n);
  });

  it('names failed entries, internal errors and unknown exits in the stop message', async () => {
    const vm = new MockVm();
    const steps: ScriptStep[] = [
      { exit: { kind: 'fail-entry', hardwareReason: 0x8000_0021n, cpu: 3 } },
      { exit: { kind: 'internal-error', suberror: 1, data: [0x10n, 0xfffn] } },
      { exit: { kind: 'unknown', reason: 99, hardwareReason: 0x7bn } },
      { exit: { kind: 'irq-window-open' } },
    ];
    const vcpus = steps.map((step, id) => vm.createVcpu(id).push(step));
    const runner = createVcpuRunner(vcpus, buses());
    runner.start();
    const stops = await runner.stopped;
    expect(stops.map((s) => [s.reason, s.message])).to.deep.equal([
      ['fail-entry', 'vCPU 0: VM entry failed on host CPU 3, hardware reason 0x80000021 (KVM_EXIT_FAIL_ENTRY)'],
      ['internal-error', 'vCPU 1: instruction emulation failed (KVM_EXIT_INTERNAL_ERROR, data 0x10 0xfff)'],
      ['unhandled-exit', 'vCPU 2: unhandled exit reason 99, hardware reason 0x7b'],
      ['hlt', 'vCPU 3: halted (KVM_EXIT_HLT)'],
    ]);
  });

  it('starts vCPUs in the x86 reset state', () => {
    const vcpu = new MockVm().createVcpu(0);
    expect(vcpu.getRegs().rip).to.equal(0xfff0n);
    expect(vcpu.getSregs().cs.base).to.equal(0xffff_0000n);
    vcpu.setMsrs([{ index: 0xc000_0080, data: 0x500n }]);
    expect(vcpu.getMsrs([0xc000_0080])).to.deep.equal([{ index: 0xc000_0080, data: 0x500n }]);
  });

  it('stops a running vCPU on request, and reports a throwing device as an error', async () => {
    const vm = new MockVm();
    const spinning = vm.createVcpu(0).push(...Array.from({ length: 10_000 }, () => ({ io: 'out' as const, port: 0x80, size: 1 as const, value: 0 })));
    const runner = createVcpuRunner([spinning], buses());
    runner.start();
    const [stop] = await runner.stop();
    expect(stop!.reason).to.equal('stopped');

    const b = buses();
    const broken: BusDevice = {
      read: () => {
        throw new Error('register 0x14 is write-only');
      },
      write: () => undefined,
    };
    b.mmio.insert(broken, 0, 0x100, 'broken');
    const reader = vm.createVcpu(1).push({ mmio: 'read', address: 0x14, size: 4 });
    const second = createVcpuRunner([reader], b);
    second.start();
    const [error] = await second.stopped;
    expect([error!.reason, error!.message]).to.deep.equal(['error', 'vCPU 1: register 0x14 is write-only']);
  });

  it('hands the kernel role for KVM_MEMORY_ENCRYPT_OP to the test', () => {
    const vm = new MockVm();
    expect(() => vm.memoryEncryptOp(new Uint8Array(16))).to.throw(/KVM_MEMORY_ENCRYPT_OP failed: ENOTTY/);
    vm.encryptOpHandler = (command) => {
      command[12] = 7;
    };
    const command = new Uint8Array(16);
    command[0] = 3;
    vm.memoryEncryptOp(command);
    expect(command[12]).to.equal(7);
    expect(vm.encryptCommands.map((c) => c[0])).to.deep.equal([0, 3]);
  });

  it('registers shared guest memory as slots', () => {
    const vm = new MockVm();
    const memory = GuestMemory.shared([
      { guestAddress: 0, size: 0x10000 },
      { guestAddress: 0x100000, size: 0x20000 },
    ]);
    vm.registerMemory(memory);
    expect(vm.slots.map((s) => [s.slot, s.guestAddress, s.size])).to.deep.equal([
      [0, 0, 0x10000],
      [1, 0x100000, 0x20000],
    ]);
    expect(vm.memory).to.equal(memory);
  });

  it('delivers any sequence of MMIO writes to the device in order, byte-exact', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            offset: fc.integer({ min: 0, max: 0xff8 }),
            size: fc.constantFrom(1 as const, 2 as const, 4 as const, 8 as const),
            value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
          }),
          { maxLength: 20 },
        ),
        async (writes) => {
          const vm = new MockVm();
          const b = buses();
          const device = new RecordingDevice();
          b.mmio.insert(device, 0xfe00_0000, 0x1000, 'device');
          const vcpu = vm.createVcpu(0).push(...writes.map((w) => ({ mmio: 'write' as const, address: 0xfe00_0000 + w.offset, size: w.size, value: w.value })));
          const runner = createVcpuRunner([vcpu], b);
          runner.start();
          await runner.stopped;
          expect(device.accesses).to.deep.equal(
            writes.map((w) => ({
              op: 'write',
              offset: w.offset,
              data: Array.from({ length: w.size }, (_, i) => Number((w.value >> BigInt(8 * i)) & 0xffn)),
            })),
          );
        },
      ),
      { numRuns: 50 },
    );
  });
});
