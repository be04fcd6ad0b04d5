// Step 3: protected and long mode. A 64-bit kernel expects paging on, a 64-bit code segment and flat
// data segments from a GDT, and page tables that map it. src/boot builds exactly these for the Linux
// direct entry; here they are placed in a small VM and a few 64-bit instructions run on them.
import { BootSegments, encodeDescriptor } from '../../src/boot/boot-tables.js';
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import { enterLongMode, failInOneLine, hex, tinyVm } from './guest-vm.js';

failInOneLine();

const CODE = 0x1000;
const RESULT = 0x1_0000;
const PRESENT = 1n;
const HUGE = 0x80n;
const ADDRESS_BITS = 0x000f_ffff_ffff_f000n;

// 64-bit code, hand-assembled.
const code = [
  0x48,
  0xb8,
  0x88,
  0x77,
  0x66,
  0x55,
  0x44,
  0x33,
  0x22,
  0x11, // movabs rax, 0x1122334455667788 (a 64-bit immediate)
  0x48,
  0x89,
  0x04,
  0x25,
  0x00,
  0x00,
  0x01,
  0x00, //             mov [0x10000], rax
  0x0f,
  0x20,
  0xc3, //                                           mov rbx, cr0
  0x0f,
  0x20,
  0xe1, //                                           mov rcx, cr4
  0xf4, //                                                       hlt
];

/** The walk the CPU's MMU does for a virtual address: PML4 -> PDPT -> page directory -> 2 MiB page. */
function translate(memory: GuestMemory, cr3: bigint, virtual: bigint): bigint | undefined {
  let table = cr3 & ADDRESS_BITS;
  for (const [level, shift] of [
    ['PML4', 39n],
    ['PDPT', 30n],
    ['PD', 21n],
  ] as const) {
    const index = (virtual >> shift) & 0x1ffn;
    const entry = memory.readU64(Number(table + index * 8n));
    console.log(`  ${level}[${index}] at ${hex(table + index * 8n)} = ${hex(entry, 16)}${entry & PRESENT ? '' : ' (not present)'}`);
    if (!(entry & PRESENT)) return undefined;
    if (level === 'PD' && entry & HUGE) return (entry & 0x000f_ffff_ffe0_0000n) | (virtual & 0x1f_ffffn);
    table = entry & ADDRESS_BITS;
  }
  return undefined;
}

const guest = tinyVm(2 << 20);
const { memory, vcpu } = guest;
let status = 1;
try {
  memory.write(CODE, Uint8Array.from(code));
  console.log('boot structures from src/boot (directEntryTables), placed in guest RAM:');
  for (const p of enterLongMode(guest, CODE)) console.log(`  ${p.what.padEnd(16)} at ${hex(p.guestAddress, 5)}, ${p.bytes.length} bytes`);
  console.log('GDT descriptors (selector: encoded descriptor):');
  for (const [name, d] of Object.entries(BootSegments)) console.log(`  ${name.padEnd(6)} ${hex(d.selector, 2)}: ${hex(encodeDescriptor(d), 16)}`);
  const sregs = vcpu.getSregs();
  console.log(`CPU state: cr0=${hex(sregs.cr0)} (PE|ET|PG) cr3=${hex(sregs.cr3)} cr4=${hex(sregs.cr4)} (PAE) efer=${hex(sregs.efer)} (LME|LMA)`);
  console.log(`  cs selector ${hex(sregs.cs.selector)} with L=${sregs.cs.l} (64-bit code), ss/ds selector ${hex(sregs.ds.selector)}`);
  console.log(`page walk for rip ${hex(CODE)}:`);
  const physical = translate(memory, sregs.cr3, BigInt(CODE));
  console.log(physical === undefined ? '  -> not mapped: the fetch will fault' : `  -> guest-physical ${hex(physical)}`);

  const exit = vcpu.run();
  if (exit.kind === 'hlt') {
    const regs = vcpu.getRegs();
    console.log(`exit: hlt at rip=${hex(regs.rip)}`);
    console.log(`the guest saw cr0=${hex(regs.rbx)} cr4=${hex(regs.rcx)} and wrote ${hex(memory.readU64(RESULT), 16)} at ${hex(RESULT)}`);
    status = memory.readU64(RESULT) === 0x1122_3344_5566_7788n ? 0 : 1;
  } else if (exit.kind === 'shutdown') {
    // The IDT is empty: any fault becomes a double fault, then a triple fault, which KVM reports as this.
    console.log('exit: shutdown (triple fault): the guest faulted and had no IDT to handle it');
  } else {
    console.log(`exit: ${exit.kind}`);
  }
} finally {
  guest.close();
}
process.exitCode = status;
