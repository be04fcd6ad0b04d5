// Boots the unmodified Debian kernel on KVM through `ts-vmm boot`, as a user would. Grouped in one
// suite so the lab (nested under TCG in CI) pays for its own boot once.
import { expect } from 'chai';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LowMemory } from '../../src/boot/layout.js';
import { ExitStatus } from '../../src/vmm/exit-status.js';
import { elfKernel } from '../boot/elf-fixture.js';
import { guestAssets, tsVmmBoot, type Guest } from './guest-fixtures.js';

const BOOT_TIMEOUT_MS = 240_000;
const MARKER = 'ts-vmm-init-reached';
const CMDLINE = 'console=ttyS0 quiet';

describe('Linux boot on KVM @kvm', function () {
  this.timeout(BOOT_TIMEOUT_MS + 30_000);
  let guest: Guest;
  let report: string;

  before(async () => {
    guest = await guestAssets();
    report = await guest.initrd('report', `echo ${MARKER}\necho "nproc=$(nproc)"\npoweroff -f`);
  });

  after(async () => {
    await guest?.dispose();
  });

  it('reaches init through the direct 64-bit entry and exits 0 when the guest powers off', async () => {
    const r = await tsVmmBoot(['--kernel', guest.kernel, '--initrd', report, '--cmdline', CMDLINE], BOOT_TIMEOUT_MS);
    expect(r.stdout).to.contain(MARKER);
    expect(r.stdout).to.contain('nproc=1');
    expect(r.status, r.stderr).to.equal(ExitStatus.guestStopped);
  });

  it('gives the guest as many online CPUs as --cpus', async () => {
    const r = await tsVmmBoot(['--kernel', guest.kernel, '--initrd', report, '--cmdline', CMDLINE, '--cpus', '2'], BOOT_TIMEOUT_MS);
    expect(r.stdout).to.contain('nproc=2');
    expect(r.status, r.stderr).to.equal(ExitStatus.guestStopped);
  });

  it('keeps every line whole and in order when two vCPUs print at once through the one UART', async () => {
    // Each vCPU thread answers the UART from the shared state: a writer pinned to each CPU, both at once.
    const lines = 100;
    const writer = (cpu: number) =>
      `taskset -c ${cpu} sh -c 'i=0; while [ $i -lt ${lines} ]; do echo "cpu${cpu} line $i abcdefghijklmnopqrstuvwxyz"; i=$((i+1)); done' &`;
    // Background jobs read /dev/null, which only devtmpfs provides here.
    const init = await guest.initrd('two-printers', `mount -t devtmpfs dev /dev\n${writer(0)}\n${writer(1)}\nwait\necho ${MARKER}\npoweroff -f`);
    const r = await tsVmmBoot(['--kernel', guest.kernel, '--initrd', init, '--cmdline', CMDLINE, '--cpus', '2'], BOOT_TIMEOUT_MS);
    expect(r.status, r.stderr).to.equal(ExitStatus.guestStopped);
    expect(r.stdout).to.contain(MARKER);
    for (const cpu of [0, 1]) {
      const printed = r.stdout.split(/\r?\n/).filter((line) => line.startsWith(`cpu${cpu} `));
      expect(printed, `cpu${cpu} in: ${r.stdout.slice(-600)}`).to.deep.equal(
        Array.from({ length: lines }, (_, i) => `cpu${cpu} line ${i} abcdefghijklmnopqrstuvwxyz`),
      );
    }
  });

  it('reaches init through the firmware at the reset vector, with the same kernel', async () => {
    const r = await tsVmmBoot(['--firmware', '--kernel', guest.kernel, '--initrd', report, '--cmdline', CMDLINE, '--cpus', '2'], BOOT_TIMEOUT_MS);
    expect(r.stdout).to.contain(MARKER);
    expect(r.stdout).to.contain('nproc=2');
    expect(r.status, r.stderr).to.equal(ExitStatus.guestStopped);
  });

  // Linux's default reboot on a hardware-reduced ACPI machine without EFI ends in a real-mode jump to
  // the BIOS reset vector; reboot=k and reboot=a take the i8042 and the FADT reset register directly.
  it('exits 0 when the guest reboots', async () => {
    const rebooting = await guest.initrd('reboot', `echo ${MARKER}\nreboot -f`);
    const r = await tsVmmBoot(['--kernel', guest.kernel, '--initrd', rebooting, '--cmdline', CMDLINE], BOOT_TIMEOUT_MS);
    expect(r.stdout).to.contain(MARKER);
    expect(r.status, r.stderr).to.equal(ExitStatus.guestStopped);
  });

  it('fails with the panic message when the kernel panics and then spins (panic=0)', async () => {
    const dying = await guest.initrd('panic-spin', `echo ${MARKER}\nexit 4`);
    const r = await tsVmmBoot(['--kernel', guest.kernel, '--initrd', dying, '--cmdline', CMDLINE], BOOT_TIMEOUT_MS);
    expect(r.status).to.equal(ExitStatus.guestFailed);
    expect(r.stderr).to.match(/guest kernel panic: Attempted to kill init! exitcode=0x00000400/);
  });

  it('fails with the panic message when the kernel panics (panic=-1 reboots at once)', async () => {
    // Through the kernel log, which a panic flushes: a tty write may still sit in the UART's transmit
    // buffer when panic=-1 reboots, and a slow (nested) guest then loses it.
    const dying = await guest.initrd('panic', `mount -t devtmpfs dev /dev\necho "<2>${MARKER}" > /dev/kmsg\nexit 3`);
    const r = await tsVmmBoot(['--kernel', guest.kernel, '--initrd', dying, '--cmdline', `${CMDLINE} panic=-1`], BOOT_TIMEOUT_MS);
    expect(r.stdout).to.contain(MARKER);
    expect(r.status).to.equal(ExitStatus.guestFailed);
    expect(r.stderr).to.match(/guest kernel panic: Attempted to kill init! exitcode=0x00000300/);
  });
});

// Tiny stand-in kernels: a few instructions each, so these run even where KVM emulates the guest.
describe('ts-vmm boot without Linux: entry paths and failure exits @kvm', function () {
  this.timeout(60_000);

  async function kernelFile(code: number[]): Promise<string> {
    const path = join(await mkdtemp(join(tmpdir(), 'ts-vmm-entry-')), 'kernel.elf');
    await writeFile(path, elfKernel({ paddr: 0x100_0000, code: Uint8Array.from(code) }));
    return path;
  }

  /**
   * Writes rsi, then a constant loaded with movabs (which decodes so only in 64-bit mode), to COM1 a
   * byte at a time, then ud2:
   *   movabs $0x1122334455667788, %rbx; mov $0x3f8, %dx
   *   mov %rsi, %rax; mov $8, %ecx; 1: out %al, %dx; shr $8, %rax; dec %ecx; jnz 1b
   *   mov %rbx, %rax; mov $8, %ecx; 2: out %al, %dx; shr $8, %rax; dec %ecx; jnz 2b
   *   ud2
   */
  const probe = [
    0x48, 0xbb, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x66, 0xba, 0xf8, 0x03, 0x48, 0x89, 0xf0, 0xb9, 0x08, 0x00, 0x00, 0x00, 0xee, 0x48, 0xc1, 0xe8,
    0x08, 0xff, 0xc9, 0x75, 0xf7, 0x48, 0x89, 0xd8, 0xb9, 0x08, 0x00, 0x00, 0x00, 0xee, 0x48, 0xc1, 0xe8, 0x08, 0xff, 0xc9, 0x75, 0xf7, 0x0f, 0x0b,
  ];
  const expected = Buffer.concat([
    Buffer.from(new BigUint64Array([BigInt(LowMemory.zeroPage)]).buffer),
    Buffer.from(new BigUint64Array([0x1122334455667788n]).buffer),
  ]);

  for (const entry of ['direct', 'firmware'] as const) {
    it(`${entry} entry: arrives at the kernel entry in 64-bit mode with rsi = zero page`, async () => {
      const args = ['--kernel', await kernelFile(probe), ...(entry === 'firmware' ? ['--firmware'] : [])];
      const r = await tsVmmBoot(args, 50_000);
      expect(Buffer.from(r.stdout, 'latin1').equals(expected), `console bytes ${Buffer.from(r.stdout, 'latin1').toString('hex')}`).to.equal(true);
      expect(r.status).to.equal(ExitStatus.guestFailed);
    });
  }

  it('exits 0 when the guest pulses reset through the i8042 and keeps polling it, as Linux does', async () => {
    // mov $0xfe, %al; out %al, $0x64; then 100 reads of port 0x64 and ud2, as Linux's reboot loop does.
    const code = [0xb0, 0xfe, 0xe6, 0x64, 0xb9, 0x64, 0x00, 0x00, 0x00, 0xe4, 0x64, 0xff, 0xc9, 0x75, 0xfa, 0x0f, 0x0b];
    const r = await tsVmmBoot(['--kernel', await kernelFile(code)], 50_000);
    expect(r.status, r.stderr).to.equal(ExitStatus.guestStopped);
  });

  it('fails with a register dump when the guest triple-faults', async () => {
    // ud2 at the entry point, with the boot IDT empty: #UD, #DF, then a triple fault.
    const r = await tsVmmBoot(['--kernel', await kernelFile([0x0f, 0x0b]), '--dump-regs'], 50_000);
    expect(r.status).to.equal(ExitStatus.guestFailed);
    expect(r.stderr).to.match(/triple fault/);
    // AMD reinitialises the VMCB after a shutdown intercept, so only Intel keeps the faulting rip.
    expect(r.stderr).to.match(/rip=[0-9a-f]{16}/);
  });
});
