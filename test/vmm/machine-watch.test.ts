// What a watched run prints and writes at its end, from recorders filled as a vCPU thread fills them:
// the trace's lines (device named, only the chosen kinds, the last N or the whole file), the statistics,
// and the timeline's milestones.
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExitRecorder } from '../../src/kvm/exit-recorder.js';
import type { VcpuExit } from '../../src/kvm/types.js';
import { MachineWatch, type WatchOptions } from '../../src/vmm/machine-watch.js';
import type { RunStats } from '../../src/vmm/run-stats.js';

const RANGES = [
  { space: 'mmio' as const, base: 0xd000_0060, size: 8, name: 'virtio-blk(/tmp/x/disk.img) interrupt status' },
  { space: 'pio' as const, base: 0x3f8, size: 8, name: 'COM1 16550A' },
  { space: 'mmio' as const, base: 0xd000_0000, size: 0x200, name: 'virtio-blk(/tmp/x/disk.img)' },
];

const out = (byte: number): VcpuExit => ({ kind: 'io', direction: 'out', port: 0x3f8, size: 1, count: 1, data: Uint8Array.of(byte) });
const magic: VcpuExit = { kind: 'mmio', address: 0xd000_0000, isWrite: false, data: Uint8Array.of(0x76, 0x69, 0x72, 0x74) };
const ack: VcpuExit = { kind: 'mmio', address: 0xd000_0064, isWrite: true, data: Uint8Array.of(1, 0, 0, 0) };

function watched(options: Partial<WatchOptions>, exits: VcpuExit[]): { printed: string; watch: MachineWatch } {
  let printed = '';
  const watch = new MachineWatch({ traceLast: 1000, ...options }, (text) => {
    printed += text;
  });
  const [descriptor] = watch.recorders(1, RANGES);
  const recorder = new ExitRecorder(descriptor!);
  const t0 = performance.timeOrigin + performance.now();
  for (const [i, exit] of exits.entries()) recorder.record(exit, t0 + i);
  watch.console(Buffer.from('Linux version 6.1\nRun /init as init process\n'));
  watch.finish();
  return { printed, watch };
}

describe('machine watch', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-watch-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('prints the last N traced events of the chosen kinds with the device that answered', () => {
    const { printed } = watched({ trace: ['virtio'], traceLast: 2 }, [out(0x41), magic, out(0x42), ack, { kind: 'hlt' }]);
    const lines = printed.trim().split('\n');
    expect(lines[0]).to.equal('ts-vmm: trace: the last 2 events');
    expect(lines[1]).to.match(/^ *\d+\.\d{3}ms vcpu0 mmio +read +0xd0000000 size 4 value 0x74726976 virtio-blk\(\/tmp\/x\/disk\.img\)$/);
    expect(lines[2]).to.match(/ mmio +write 0xd0000064 size 4 value 0x00000001 virtio-blk\(\/tmp\/x\/disk\.img\) interrupt status$/);
    expect(lines).to.have.length(3);
  });

  it('says how many events the ring no longer held', () => {
    const { printed } = watched({ trace: ['pio'], traceLast: 2 }, [out(1), out(2), out(3), out(4), out(5)]);
    expect(printed).to.contain('the last 2 events (3 earlier ones not kept: --trace-file keeps all)');
    expect(printed).to.match(/write 0x03f8 size 1 value 0x05 COM1 16550A\n$/);
  });

  it('writes every event to --trace-file, readable only by its owner', () => {
    const file = join(dir, 'trace.txt');
    const exits = Array.from({ length: 50 }, (_, i) => out(i));
    const { printed } = watched({ trace: ['exits'], traceFile: file }, [...exits, { kind: 'shutdown' }]);
    expect(printed).to.equal('');
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    expect(lines).to.have.length(51);
    expect(lines[50]).to.match(/vcpu0 shutdown/);
    expect(statSync(file).mode & 0o777).to.equal(0o600);
  });

  it('writes the statistics as JSON to --stats FILE, and as a table without a file', () => {
    const file = join(dir, 'stats.json');
    watched({ stats: file }, [out(1), out(2), magic, ack, { kind: 'hlt' }]);
    const stats = JSON.parse(readFileSync(file, 'utf8')) as RunStats;
    expect(stats.vcpus[0]!.exitsByReason).to.deep.equal({ pio: 2, mmio: 2, hlt: 1 });
    expect(stats.devices).to.deep.equal([
      { name: 'COM1 16550A', exits: 2, bytes: 2 },
      { name: 'virtio-blk(/tmp/x/disk.img)', exits: 1, bytes: 4 },
      { name: 'virtio-blk(/tmp/x/disk.img) interrupt status', exits: 1, bytes: 4 },
    ]);
    const { printed } = watched({ stats: true }, [out(1), { kind: 'hlt' }]);
    expect(printed).to.match(
      /^vcpu0: 2 exits; [\d.]+ ms in the guest, [\d.]+ ms in the VMM\n {2}by reason: pio 1, hlt 1\n {2}COM1 16550A +1 exits +1 bytes\n$/,
    );
  });

  it('marks start-up, the console, init and the virtio probe on the timeline', () => {
    const file = join(dir, 'boot.svg');
    watched({ timeline: file }, [out(1), magic]);
    const svg = readFileSync(file, 'utf8');
    for (const label of ['VMM start-up', 'first console line', 'init', 'virtio-blk(disk.img) probe', 'vCPU 0 exits']) expect(svg).to.contain(`>${label}`);
    expect(svg).not.to.contain('interrupt status probe');
  });
});
