// Step 4: Linux. The stock Debian kernel from the project's asset cache, booted through the 64-bit
// boot protocol: the kernel image parsed, every byte the VMM places before the first instruction
// listed (kernel, command line, zero page with the e820 map, ACPI tables, step 3's GDT and page tables),
// then the machine of src/vmm run until the guest powers off. Its init is a two-line busybox script.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBusybox, ensureDebianKernel } from '../../src/assets/debian.js';
import { E820Type } from '../../src/boot/boot-params-abi.js';
import { parseKernelImage } from '../../src/boot/kernel-image.js';
import { prepareBoot } from '../../src/boot/prepare.js';
import { writeInitramfs } from '../../src/initramfs/builder.js';
import { exitStatusOf } from '../../src/vmm/exit-status.js';
import { runMachine } from '../../src/vmm/machine.js';
import { failInOneLine, hex } from './guest-vm.js';

failInOneLine();

// loglevel=6 shows the kernel's notices (its banner among them) but not its informational chatter:
// every console byte is a vCPU exit, which costs time in a nested guest.
const CMDLINE = 'console=ttyS0 loglevel=6';
const MEMORY_MIB = 256;
const INIT_LINE = 'init: hello from user space';
const E820_NAMES: Record<number, string> = { [E820Type.RAM]: 'usable RAM', [E820Type.RESERVED]: 'reserved', [E820Type.ACPI]: 'ACPI' };

const [kernel, busybox] = await Promise.all([ensureDebianKernel(), ensureBusybox()]);
console.log(`kernel: ${kernel.vmlinuz} (Debian ${kernel.release})`);
const work = await mkdtemp(join(tmpdir(), 'bring-up-linux-'));
try {
  const initrd = join(work, 'initrd.cpio');
  await writeInitramfs(initrd, 'none', async (b) => {
    await b.hostFile(busybox.path, 'bin/busybox');
    await b.file('init', `#!/bin/busybox sh\n/bin/busybox echo "${INIT_LINE}"\n/bin/busybox poweroff -f\n`, { mode: 0o755 });
  });

  const image = new Uint8Array(await readFile(kernel.vmlinuz));
  const parsed = parseKernelImage(image);
  if (parsed.kind === 'bzImage') {
    console.log(
      `bzImage: boot protocol ${parsed.protocolVersion >> 8}.${parsed.protocolVersion & 0xff}, loaded at ${hex(parsed.loadAddress)},` +
        ` 64-bit entry ${hex(parsed.entry)}, needs ${parsed.initSize >> 20} MiB to decompress itself`,
    );
  }

  const boot = await prepareBoot({
    kernel: image,
    initrd: new Uint8Array(await readFile(initrd)),
    cmdline: CMDLINE,
    cpus: 1,
    memoryMiB: MEMORY_MIB,
    virtioDevices: 0,
    entry: 'direct',
  });
  console.log(`boot plan: every byte placed in guest RAM before the first instruction (${MEMORY_MIB} MiB of RAM)`);
  for (const p of boot.plan.placements) console.log(`  ${hex(p.guestAddress, 8)}  ${String(p.bytes.length).padStart(9)} bytes  ${p.what}`);
  console.log(`zero page at ${hex(boot.plan.zeroPage)}: the setup header, the command line's address, the initrd's, the RSDP's, and the e820 map:`);
  for (const e of boot.plan.e820) console.log(`  ${hex(e.addr, 9)}-${hex(e.addr + e.size - 1, 9)}  ${E820_NAMES[e.type] ?? e.type}`);
  console.log(`command line: "${boot.cmdline}"`);
  console.log(`vCPU 0 starts in long mode at ${hex(boot.plan.kernelEntry)} with rsi = ${hex(boot.plan.zeroPage)} (the zero page)`);
  console.log("running; the guest's serial console (COM1, a 16550A at port 0x3f8) follows:");

  let pending = '';
  let lines = 0;
  const exit = await runMachine({
    boot,
    consoleOutput: (bytes) => {
      pending += Buffer.from(bytes).toString('latin1');
      for (let end = pending.indexOf('\n'); end >= 0; end = pending.indexOf('\n')) {
        const line = pending.slice(0, end).replace(/\r$/, '');
        pending = pending.slice(end + 1);
        console.log(lines++ === 0 ? `first console line: ${line}` : `  console: ${line}`);
      }
    },
  });
  console.log(`the run ended: ${exit.kind}${exit.kind === 'guest-stopped' ? ` (${exit.request})` : `: ${exit.reason}`}`);
  process.exitCode = exitStatusOf(exit);
} finally {
  await rm(work, { recursive: true, force: true });
}
