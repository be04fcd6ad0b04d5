// The stock Debian kernel's own virtio_mmio and virtio_blk drivers on ts-vmm's devices, through
// `ts-vmm boot --disk`: the guest reads a disk and reports its checksum, writes and syncs before
// powering off (the bytes must then be in the host file), and is refused writes on a `,ro` disk.
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureBusybox, ensureDebianKernel } from '../../src/assets/debian.js';
import { writeInitramfs } from '../../src/initramfs/builder.js';
import { ModuleTree, readModuleImage } from '../../src/initramfs/modules.js';
import { ExitStatus } from '../../src/vmm/exit-status.js';
import { tsVmmBoot } from '../vmm/guest-fixtures.js';

const BOOT_TIMEOUT_MS = 240_000;
const GUEST_WRITE = 'written by the guest through virtio-blk';

describe('Linux virtio_blk on ts-vmm disks @kvm', function () {
  this.timeout(BOOT_TIMEOUT_MS + 60_000);

  it('reads a disk bit for bit, writes what it synced before power-off, and cannot write a read-only disk', async () => {
    const [kernel, busybox] = await Promise.all([ensureDebianKernel(), ensureBusybox()]);
    const modules = await (await ModuleTree.open(kernel.modulesDir)).loadOrder(['virtio_mmio', 'virtio_blk']);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-vmm-linux-disk-'));
    try {
      const content = randomBytes(4 << 20);
      const rw = path.join(dir, 'rw.img');
      const ro = path.join(dir, 'ro.img');
      fs.writeFileSync(rw, content);
      fs.writeFileSync(ro, content);
      const init = [
        'mount -t proc proc /proc',
        'mount -t sysfs sys /sys',
        'mount -t devtmpfs dev /dev',
        ...modules.map((m) => `insmod /modules/${m.name}.ko`),
        'for i in $(seq 100); do [ -b /dev/vdb ] && break; sleep 0.1; done',
        'echo "vda-sha256=$(sha256sum /dev/vda | cut -d" " -f1)"',
        'echo "vdb-ro=$(cat /sys/block/vdb/ro)"',
        `printf '${GUEST_WRITE}' | dd of=/dev/vda bs=512 seek=8 conv=notrunc 2>/dev/null`,
        'sync',
        `printf 'x' | dd of=/dev/vdb bs=512 seek=8 conv=notrunc,fsync 2>/dev/null; echo "vdb-write-status=$?"`,
        'poweroff -f',
      ].join('\n');
      const initrd = path.join(dir, 'initrd.cpio');
      await writeInitramfs(initrd, 'none', async (b) => {
        for (const d of ['proc', 'sys', 'dev', 'modules']) await b.mkdirp(d);
        await b.hostFile(busybox.path, 'bin/busybox');
        for (const m of modules) await b.file(`modules/${m.name}.ko`, await readModuleImage(m.path));
        await b.file('init', `#!/bin/busybox sh\n/bin/busybox --install -s /bin\n${init}\n`, { mode: 0o755 });
      });
      const r = await tsVmmBoot(
        ['--kernel', kernel.vmlinuz, '--initrd', initrd, '--cmdline', 'console=ttyS0 quiet', '--disk', rw, '--disk', `${ro},ro`],
        BOOT_TIMEOUT_MS,
      );
      // stdin is /dev/null; the disks' I/O threads must not keep the run from ending cleanly.
      expect(r.status, `${r.stderr}\nconsole tail:\n${r.stdout.slice(-3000)}`).to.equal(ExitStatus.guestStopped);
      expect(r.stdout, r.stderr).to.contain(`vda-sha256=${createHash('sha256').update(content).digest('hex')}`);
      expect(r.stdout).to.contain('vdb-ro=1');
      expect(r.stdout).to.match(/vdb-write-status=[1-9]/);
      const after = fs.readFileSync(rw);
      expect(after.subarray(4096, 4096 + GUEST_WRITE.length).toString()).to.equal(GUEST_WRITE);
      expect(fs.readFileSync(ro).equals(content)).to.equal(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
