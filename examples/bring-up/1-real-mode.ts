// Step 1: what a VM exit is. A real-mode guest of a few bytes writes a byte to an I/O port, reads one
// back, stores it in its memory and halts. The CPU runs the guest until it does something only the VMM
// can answer; KVM_RUN then returns with the reason (an exit), we answer, and call KVM_RUN again.
import { failInOneLine, hex, realModeGuest } from './guest-vm.js';

failInOneLine();

const ENTRY = 0x1000;
const RESULT = 0x8000;
const OUT_PORT = 0x10;
const IN_PORT = 0x11;
const ANSWER = 0x07;

// 16-bit code, hand-assembled.
const code = [
  0xb0,
  0x42, //       mov al, 0x42
  0xe6,
  OUT_PORT, //   out 0x10, al       -> exit: the VMM sees the byte
  0xe4,
  IN_PORT, //    in al, 0x11        -> exit: the VMM puts the answer in kvm_run
  0xfe,
  0xc0, //       inc al             (runs in the CPU: no exit)
  0xa2,
  RESULT & 0xff,
  RESULT >> 8, // mov [0x8000], al (plain memory: no exit)
  0xf4, //             hlt                -> exit: nothing left to do
];

const guest = realModeGuest(code, ENTRY);
const { vcpu, memory } = guest;
console.log(`guest: ${code.length} bytes of 16-bit code at ${hex(ENTRY)}; vCPU 0 in real mode, rip=${hex(ENTRY)}`);

let status = 1;
try {
  for (let exits = 1; exits <= 16; exits++) {
    const exit = vcpu.run();
    if (exit.kind === 'io' && exit.direction === 'out') {
      console.log(`exit ${exits}: I/O out, port ${hex(exit.port)}, ${exit.size} byte: the guest wrote ${hex(exit.data[0]!, 2)}`);
    } else if (exit.kind === 'io') {
      // The answer goes into the exit's data (inside kvm_run); KVM loads it into al on the next KVM_RUN.
      exit.data[0] = ANSWER;
      console.log(`exit ${exits}: I/O in, port ${hex(exit.port)}, ${exit.size} byte: we answer ${hex(ANSWER, 2)}`);
    } else if (exit.kind === 'hlt') {
      const regs = vcpu.getRegs();
      console.log(`exit ${exits}: hlt at rip=${hex(regs.rip)} (one past the hlt at ${hex(ENTRY + code.length - 1)})`);
      console.log(`registers: rax=${hex(regs.rax, 2)} (our answer + 1: inc al ran inside the CPU)`);
      console.log(`guest memory at ${hex(RESULT)}: ${hex(memory.readU8(RESULT), 2)} (written by the guest with no exit)`);
      status = 0;
      break;
    } else {
      console.error(`unexpected exit: ${exit.kind}`);
      break;
    }
  }
  if (status !== 0) console.error('the guest did not halt as expected');
} finally {
  guest.close();
}
process.exitCode = status;
