// `ts-vmm boot --trace/--stats/--timeline` on real KVM: a stand-in kernel whose exits are known one by
// one (8 bytes written to COM1, then a triple fault), and the stock kernel with a virtio disk, whose
// timeline must show the probe and the console.
import { expect } from 'chai';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBusybox, ensureDebianKernel } from '../../src/assets/debian.js';
import { writeInitramfs } from '../../src/initramfs/builder.js';
import { ModuleTree, readModuleImage } from '../../src/initramfs/modules.js';
import type { RunStats } from '../../src/vmm/run-stats.js';
import { ExitStatus } from '../../src/vmm/exit-status.js';
import { elfKernel } from '../boot/elf-fixture.js';
import { tsVmmBoot } from './guest-fixtures.js';

/** mov $0x3f8, %dx; mov $0x1122334455667788, %rax; mov $8, %ecx; 1: out %al, %dx; shr $8, %rax; dec %ecx; jnz 1b; ud2 */
const EIGHT_BYTES_TO_COM1 = [
  0x66, 0xba, 0xf8, 0x03, 0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xb9, 0x08, 0x00, 0x00, 0x00, 0xee, 0x48, 0xc1, 0xe8, 0x08, 0xff, 0xc9,
  0x75, 0xf7, 0x0f, 0x0b,
];

describe('ts-vmm boot --trace, --stats and --timeline @kvm', function () {
  this.timeout(300_000);
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ts-vmm-watch-'));
  });

  it('traces each port write with its value and device, keeps only the last N, and counts them in --stats', async () => {
    const kernel = join(dir, 'kernel.elf');
    await writeFile(kernel, elfKernel({ paddr: 0x100_0000, code: Uint8Array.from(EIGHT_BYTES_TO_COM1) }));
    const stats = join(dir, 'stats.json');
    const r = await tsVmmBoot(['--kernel', kernel, '--trace', 'pio', '--trace-last', '5', '--stats', stats], 50_000);
    expect(r.status, r.stderr).to.equal(ExitStatus.guestFailed);
    expect(r.stderr).to.contain('trace: the last 5 events (3 earlier ones not kept');
    const lines = r.stderr.split('\n').filter((l) => / vcpu0 pio /.test(l));
    expect(lines.map((l) => l.match(/write 0x03f8 size 1 value 0x([0-9a-f]{2}) COM1 16550A$/)?.[1])).to.deep.equal(['55', '44', '33', '22', '11']);
    const recorded = JSON.parse(await readFile(stats, 'utf8')) as RunStats;
    expect(recorded.vcpus[0]!.exitsByReason.pio).to.equal(8);
    expect(recorded.vcpus[0]!.exitsByReason.shutdown).to.equal(1);
    expect(recorded.devices.find((d) => d.name === 'COM1 16550A')).to.deep.equal({ name: 'COM1 16550A', exits: 8, bytes: 8 });
    expect(recorded.vcpus[0]!.guestMs).to.be.greaterThan(0);
  });

  it("draws a stock kernel's boot with its virtio disk's probe, the console and init, and writes the whole trace to a file", async () => {
    const [kernel, busybox] = await Promise.all([ensureDebianKernel(), ensureBusybox()]);
    const modules = await (await ModuleTree.open(kernel.modulesDir)).loadOrder(['virtio_mmio', 'virtio_blk']);
    const disk = join(dir, 'disk.img');
    await writeFile(disk, Buffer.alloc(1 << 20));
    const initrd = join(dir, 'initrd.cpio');
    const init = [
      'mount -t proc proc /proc',
      'mount -t sysfs sys /sys',
      ...modules.map((m) => `insmod /modules/${m.name}.ko`),
      'echo watched-boot-done',
      'poweroff -f',
    ];
    await writeInitramfs(initrd, 'none', async (b) => {
      for (const d of ['proc', 'sys', 'dev', 'modules']) await b.mkdirp(d);
      await b.hostFile(busybox.path, 'bin/busybox');
      for (const m of modules) await b.file(`modules/${m.name}.ko`, await readModuleImage(m.path));
      await b.file('init', `#!/bin/busybox sh\n/bin/busybox --install -s /bin\n${init.join('\n')}\n`, { mode: 0o755 });
    });
    const svg = join(dir, 'boot.svg');
    const trace = join(dir, 'trace.txt');
    const r = await tsVmmBoot(
      [
        '--kernel',
        kernel.vmlinuz,
        '--initrd',
        initrd,
        '--cmdline',
        'console=ttyS0',
        '--disk',
        disk,
        '--trace',
        'virtio',
        '--trace-file',
        trace,
        '--timeline',
        svg,
      ],
      240_000,
    );
    expect(r.status, `${r.stderr}\n${r.stdout.slice(-2000)}`).to.equal(ExitStatus.guestStopped);
    expect(r.stdout).to.contain('watched-boot-done');
    const picture = await readFile(svg, 'utf8');
    for (const label of ['VMM start-up', 'vCPUs start: kernel 64-bit entry', 'virtio-blk(disk.img) probe', 'first console line', 'init', 'vCPU 0 exits']) {
      expect(picture).to.contain(`>${label}`);
    }
    const lines = (await readFile(trace, 'utf8')).trim().split('\n');
    // The driver's probe starts by reading the magic value "virt" at offset 0 of the window.
    expect(
      lines.some((l) => / mmio +read +0x[0-9a-f]{8} size 4 value 0x74726976 virtio-blk\(.*disk\.img\)$/.test(l)),
      lines.slice(0, 5).join('\n'),
    ).to.equal(true);
    expect(lines.every((l) => / mmio .* virtio-blk\(.*disk\.img\)( interrupt status)?$/.test(l))).to.equal(true);
  });
});
