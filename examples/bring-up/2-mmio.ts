// Step 2: MMIO, a device register the program implements. Guest-physical addresses with no RAM behind
// them exit to the VMM like ports do; the VMM decodes the address to a device on its MMIO bus. Here the
// exits go the way the VMM's do: vCPU thread -> mailbox -> device on the main thread (src/kvm/vcpu-threads.ts).
import type { BusDevice } from '../../src/devices/bus.js';
import { Bus } from '../../src/devices/bus.js';
import { VcpuThreads } from '../../src/kvm/vcpu-threads.js';
import { failInOneLine, hex, realModeGuest } from './guest-vm.js';

failInOneLine();

const WINDOW = 0x20000; // above the guest's 64 KiB of RAM: nothing but our device answers here
const RESULT = 0x8000;

/** Three 32-bit registers: VALUE (read/write), DOUBLE (read-only, 2 x VALUE), ID (reads "DBL1"). */
class Doubler implements BusDevice {
  static readonly VALUE = 0x0;
  static readonly DOUBLE = 0x4;
  static readonly ID = 0x8;
  private value = 0;

  read(offset: number, data: Uint8Array): void {
    const register = offset === Doubler.VALUE ? this.value : offset === Doubler.DOUBLE ? (this.value * 2) >>> 0 : offset === Doubler.ID ? 0x314c4244 : 0;
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setUint32(0, register, true);
    // An access may be 1, 2, 4 or 8 bytes: give the low bytes of the register, zero beyond it.
    data.fill(0).set(bytes.subarray(0, Math.min(4, data.length)));
    console.log(`device: guest reads ${data.length} byte(s) at offset ${hex(offset)} -> ${hex(Buffer.from(data).readUIntLE(0, Math.min(data.length, 6)))}`);
  }

  write(offset: number, data: Uint8Array): void {
    const value = Buffer.from(data).readUIntLE(0, Math.min(data.length, 6));
    console.log(`device: guest writes ${data.length} byte(s) at offset ${hex(offset)}: ${hex(value)}${offset === Doubler.VALUE ? ' (VALUE)' : ' (ignored)'}`);
    if (offset === Doubler.VALUE) this.value = value >>> 0;
  }
}

// 16-bit code, hand-assembled. Real mode reaches 0x20000 through DS = 0x2000 (segment x 16).
const code = [
  0xb8,
  0x00,
  0x20, //                  mov ax, 0x2000
  0x8e,
  0xd8, //                        mov ds, ax
  0xc7,
  0x06,
  0x00,
  0x00,
  0x15,
  0x00, // mov word [VALUE], 21
  0xa1,
  0x04,
  0x00, //                  mov ax, [DOUBLE]
  0x31,
  0xdb, //                        xor bx, bx
  0x8e,
  0xdb, //                        mov ds, bx
  0xa3,
  RESULT & 0xff,
  RESULT >> 8, //  mov [0x8000], ax
  0xf4, //                              hlt
];

const guest = realModeGuest(code);
const buses = { pio: new Bus('PIO'), mmio: new Bus('MMIO') };
buses.mmio.insert(new Doubler(), WINDOW, 0x1000, 'doubler');
console.log(`VMM: a doubler device on the MMIO bus at ${hex(WINDOW)}+0x1000; guest RAM ends at 0x10000`);
console.log('guest: writes 21 to VALUE, reads DOUBLE, stores it in RAM at 0x8000, halts');

const threads = new VcpuThreads([guest.vcpu], buses);
threads.start();
const [stop] = await threads.stopped;
const stored = guest.memory.readU16(RESULT);
guest.close();
if (stop?.reason !== 'hlt') {
  console.error(`the vCPU stopped with ${stop?.reason}: ${stop?.message}`);
  process.exit(1);
}
console.log(`vCPU stopped: ${stop.message}`);
console.log(`the guest read back DOUBLE = ${stored} and stored it at ${hex(RESULT)}`);
process.exitCode = stored === 42 ? 0 : 1;
