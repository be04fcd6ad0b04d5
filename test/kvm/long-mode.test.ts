import { expect } from 'chai';
import { Bus } from '../../src/devices/bus.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { Kvm } from '../../src/kvm/kvm.js';
import type { Segment, Sregs } from '../../src/kvm/types.js';
import { VcpuThreads } from '../../src/kvm/vcpu-threads.js';
import { RecordingDevice } from './recording-device.js';

// Guest-physical layout of the test: GDT, code, 4-level page tables identity-mapping 4 GiB with
// 2 MiB pages, and a scratch page the guest writes its results to.
const GDT = 0x500;
const CODE = 0x1000;
const PML4 = 0x2000;
const PDPT = 0x3000;
const PD = 0x4000; // four pages, one per GiB
const SCRATCH = 0x8000;
const MMIO = 0xd000_0000;

const CR0_PE = 1n << 0n;
const CR0_ET = 1n << 4n;
const CR0_NE = 1n << 5n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
const PAGE_PRESENT_RW = 0x3n;
const PAGE_HUGE = 0x80n;

// 64-bit code, hand-assembled.
const program = [
  0xb0,
  0x42, //                                 mov al, 0x42
  0xe6,
  0x10, //                                 out 0x10, al
  0xe4,
  0x11, //                                 in al, 0x11
  0x88,
  0x04,
  0x25,
  0x00,
  0x80,
  0x00,
  0x00, //   mov [0x8000], al
  0xbb,
  0x00,
  0x00,
  0x00,
  0xd0, //               mov ebx, 0xd0000000
  0xc7,
  0x43,
  0x10,
  0xef,
  0xbe,
  0xad,
  0xde, //   mov dword [rbx+0x10], 0xdeadbeef
  0x48,
  0x8b,
  0x43,
  0x20, //                     mov rax, [rbx+0x20]
  0x48,
  0x89,
  0x04,
  0x25,
  0x08,
  0x80,
  0x00,
  0x00, // mov [0x8008], rax
  0xf4, //                                       hlt
];

function flatSegment(selector: number, type: number, long: boolean): Segment {
  return {
    base: 0n,
    limit: 0xffff_ffff,
    selector,
    type,
    present: 1,
    dpl: 0,
    db: long ? 0 : 1,
    s: 1,
    l: long ? 1 : 0,
    g: 1,
    avl: 0,
    unusable: 0,
    padding: 0,
  };
}

function buildLongMode(memory: GuestMemory, sregs: Sregs): Sregs {
  // GDT: null, 64-bit code (selector 8), data (selector 0x10), as the descriptors the segments cache.
  memory.writeU64(GDT, 0n);
  memory.writeU64(GDT + 8, 0x00af_9b00_0000_ffffn);
  memory.writeU64(GDT + 16, 0x00cf_9300_0000_ffffn);
  memory.writeU64(PML4, BigInt(PDPT) | PAGE_PRESENT_RW);
  for (let gib = 0; gib < 4; gib++) {
    memory.writeU64(PDPT + 8 * gib, BigInt(PD + 0x1000 * gib) | PAGE_PRESENT_RW);
    for (let i = 0; i < 512; i++) {
      const address = BigInt(gib) * (1n << 30n) + BigInt(i) * (1n << 21n);
      memory.writeU64(PD + 0x1000 * gib + 8 * i, address | PAGE_PRESENT_RW | PAGE_HUGE);
    }
  }
  const code = flatSegment(8, 0xb, true);
  const data = flatSegment(0x10, 0x3, false);
  return {
    ...sregs,
    cs: code,
    ds: data,
    es: data,
    fs: data,
    gs: data,
    ss: data,
    gdt: { base: BigInt(GDT), limit: 3 * 8 - 1, padding: [0, 0, 0] },
    cr0: CR0_PE | CR0_ET | CR0_NE | CR0_PG,
    cr3: BigInt(PML4),
    cr4: CR4_PAE,
    efer: EFER_LME | EFER_LMA,
  };
}

describe('64-bit long-mode guest on KVM @kvm', () => {
  it('runs from the first instruction in long mode and exits exactly for its I/O', async () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    const memory = GuestMemory.anonymous([{ guestAddress: 0, size: 0x10000 }]);
    vm.registerMemory(memory);
    vm.setTssAddress(0xfffb_d000);
    memory.write(CODE, new Uint8Array(program));
    const vcpu = vm.createVcpu(0);
    vcpu.setCpuid2(kvm.getSupportedCpuid());
    vcpu.setSregs(buildLongMode(memory, vcpu.getSregs()));
    vcpu.setRegs({ ...vcpu.getRegs(), rip: BigInt(CODE), rflags: 0x2n });

    const ports = new RecordingDevice(() => [0x99]);
    const window = new RecordingDevice(() => [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    const buses = { pio: new Bus('pio'), mmio: new Bus('mmio') };
    buses.pio.insert(ports, 0x10, 2, 'ports');
    buses.mmio.insert(window, MMIO, 0x1000, 'window');
    const threads = new VcpuThreads([vcpu], buses);
    threads.start();
    const [stop] = await threads.stopped;

    expect(stop!.reason, stop!.message).to.equal('hlt');
    expect(ports.accesses).to.deep.equal([
      { op: 'write', offset: 0, data: [0x42] },
      { op: 'read', offset: 1, data: [0x99] },
    ]);
    expect(window.accesses).to.deep.equal([
      { op: 'write', offset: 0x10, data: [0xef, 0xbe, 0xad, 0xde] },
      { op: 'read', offset: 0x20, data: [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11] },
    ]);
    expect(memory.readU8(SCRATCH)).to.equal(0x99);
    expect(memory.readU64(SCRATCH + 8)).to.equal(0x1122_3344_5566_7788n);
    const sregs = vcpu.getSregs();
    expect(sregs.efer & EFER_LMA, 'still in long mode').to.equal(EFER_LMA);
    expect(sregs.cs.l).to.equal(1);
    expect(stop!.regs!.rip).to.equal(BigInt(CODE + program.length));
    vcpu.close();
    vm.close();
    kvm.close();
  });
});
