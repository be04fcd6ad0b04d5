// The exit recorder's shared-memory layout as both sides see it: the vCPU side records exits, the main
// side reads counters, per-device totals, the histogram and the ring's events (the last N, or all of
// them when drained as it goes).
import { expect } from 'chai';
import { createRecorderDescriptor, ExitRecorder, ExitRecordReader, type RecorderEvents } from '../../src/kvm/exit-recorder.js';
import type { VcpuExit } from '../../src/kvm/types.js';

const RANGES = [
  { space: 'pio' as const, base: 0x3f8, size: 8, name: 'COM1 16550A' },
  { space: 'mmio' as const, base: 0xd000_0000, size: 0x200, name: 'virtio-mmio(2)' },
];
const ALL: RecorderEvents = { exits: true, pio: true, mmio: true };

function recorder(ringSlots: number, events = ALL, lossless = false) {
  const descriptor = createRecorderDescriptor({ ringSlots, lossless, events, ranges: RANGES, bucketMs: 10, originMs: 1000 });
  return { vcpu: new ExitRecorder(descriptor), main: new ExitRecordReader(descriptor) };
}

const out = (port: number, byte: number): VcpuExit => ({ kind: 'io', direction: 'out', port, size: 1, count: 1, data: Uint8Array.of(byte) });
const mmioRead = (address: number, value: number[]): VcpuExit => ({ kind: 'mmio', address, isWrite: false, data: Uint8Array.from(value) });

describe('exit recorder', () => {
  it('counts exits per reason and per device, with bytes and the first access time', () => {
    const { vcpu, main } = recorder(16);
    vcpu.record(out(0x3f8, 0x41), 1005);
    vcpu.record(out(0x3f9, 0x00), 1006);
    vcpu.record(out(0x80, 0x00), 1007);
    vcpu.record(mmioRead(0xd000_0000, [0x76, 0x69, 0x72, 0x74]), 1023);
    vcpu.record({ kind: 'hlt' }, 1030);
    const record = main.snapshot();
    expect(record.exitsByReason).to.deep.equal({ pio: 3, mmio: 1, hlt: 1 });
    expect(record.devices).to.deep.equal([
      { name: 'COM1 16550A', space: 'pio', exits: 2, bytes: 2, firstAccessMs: 1005 },
      { name: 'virtio-mmio(2)', space: 'mmio', exits: 1, bytes: 4, firstAccessMs: 1023 },
    ]);
    expect(record.histogram.slice(0, 4)).to.deep.equal([3, 0, 1, 1]);
    expect(record.firstExitMs).to.equal(1005);
    expect(record.lastExitMs).to.equal(1030);
  });

  it('keeps the value of an 8-byte access whole, and string I/O as size x count', () => {
    const { vcpu, main } = recorder(4);
    vcpu.record(mmioRead(0xd000_0008, [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0xf1]), 1001);
    vcpu.record({ kind: 'io', direction: 'out', port: 0x3f8, size: 2, count: 3, data: new Uint8Array(6) }, 1002);
    const [wide, string] = main.take();
    expect(wide!.value).to.equal(0xf122334455667788n);
    expect(string).to.include({ reason: 'pio', address: 0x3f8, size: 2, count: 3, isWrite: true });
    expect(main.snapshot().devices[0]!.bytes).to.equal(6);
  });

  it('keeps only the last N events in its ring and says how many it lost', () => {
    const { vcpu, main } = recorder(3);
    for (let i = 0; i < 8; i++) vcpu.record(out(0x3f8, i), 1000 + i);
    expect(main.take().map((e) => Number(e.value))).to.deep.equal([5, 6, 7]);
    expect(main.snapshot().eventsLost).to.equal(5);
    expect(main.take()).to.deep.equal([]);
  });

  it('puts only the chosen kinds of exit in the ring, and counts every exit anyway', () => {
    const { vcpu, main } = recorder(8, { exits: false, pio: false, mmio: true });
    vcpu.record(out(0x3f8, 1), 1001);
    vcpu.record(mmioRead(0xd000_0000, [1, 0, 0, 0]), 1002);
    vcpu.record({ kind: 'hlt' }, 1003);
    expect(main.take().map((e) => e.reason)).to.deep.equal(['mmio']);
    expect(main.snapshot().exitsByReason).to.deep.equal({ pio: 1, mmio: 1, hlt: 1 });
  });

  it('loses nothing when the reader drains as it goes (a trace file)', () => {
    const { vcpu, main } = recorder(2, ALL, true);
    const seen: number[] = [];
    for (let i = 0; i < 7; i++) {
      vcpu.record(out(0x3f8, i), 1000 + i);
      if (i % 2 === 1) seen.push(...main.take().map((e) => Number(e.value)));
    }
    seen.push(...main.take().map((e) => Number(e.value)));
    expect(seen).to.deep.equal([0, 1, 2, 3, 4, 5, 6]);
    expect(main.snapshot().eventsLost).to.equal(0);
  });

  it('times the guest inside run() and the VMM between runs', () => {
    const { vcpu, main } = recorder(1);
    const spin = (ms: number) => {
      const until = performance.now() + ms;
      while (performance.now() < until);
    };
    for (let i = 0; i < 3; i++) {
      const { exit } = vcpu.run(() => {
        spin(5);
        return { kind: 'hlt' };
      });
      expect(exit.kind).to.equal('hlt');
      spin(2);
    }
    const { guestMs, vmmMs } = main.snapshot();
    expect(guestMs).to.be.within(15, 40);
    expect(vmmMs).to.be.within(3.9, 30);
  });
});
