import { expect } from 'chai';
import { expectReject } from '../expect-reject.js';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { ensureDebianKernel } from '../../src/assets/debian.js';
import { ModuleResolutionError, ModuleTree, canonicalModuleName, formatModulesDep, readModinfo } from '../../src/initramfs/modules.js';

/** A minimal relocatable ELF64 (little-endian) with a .modinfo section holding `entries`. */
function fakeModule(entries: string[]): Buffer {
  const shstrtab = Buffer.from('\0.shstrtab\0.modinfo\0');
  const modinfo = Buffer.from(entries.map((e) => `${e}\0`).join(''));
  const dataStart = 64;
  const shoff = dataStart + shstrtab.length + modinfo.length;
  const elf = Buffer.alloc(shoff + 3 * 64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(elf);
  elf.writeUInt16LE(1, 16); // ET_REL
  elf.writeUInt16LE(62, 18); // EM_X86_64
  elf.writeBigUInt64LE(BigInt(shoff), 0x28);
  elf.writeUInt16LE(64, 0x34);
  elf.writeUInt16LE(64, 0x3a);
  elf.writeUInt16LE(3, 0x3c);
  elf.writeUInt16LE(1, 0x3e);
  shstrtab.copy(elf, dataStart);
  modinfo.copy(elf, dataStart + shstrtab.length);
  const section = (index: number, name: number, type: number, offset: number, size: number): void => {
    const at = shoff + index * 64;
    elf.writeUInt32LE(name, at);
    elf.writeUInt32LE(type, at + 4);
    elf.writeBigUInt64LE(BigInt(offset), at + 24);
    elf.writeBigUInt64LE(BigInt(size), at + 32);
  };
  section(1, 1, 3, dataStart, shstrtab.length);
  section(2, 11, 1, dataStart + shstrtab.length, modinfo.length);
  return elf;
}

function hasProgram(program: string): boolean {
  try {
    execFileSync(program, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('initramfs: kernel module dependency resolution', () => {
  let root: string;
  /** Writes a module, compressed as its suffix says (.ko.gz, .ko.xz). */
  const put = (relative: string, depends: string): void => {
    const path = join(root, relative);
    mkdirSync(dirname(path), { recursive: true });
    const elf = fakeModule([`license=GPL`, `depends=${depends}`, `name=${canonicalModuleName(relative)}`]);
    if (relative.endsWith('.gz')) writeFileSync(path, gzipSync(elf));
    else if (relative.endsWith('.xz')) writeFileSync(path, execFileSync('xz', ['-c', '--check=crc32'], { input: elf }));
    else writeFileSync(path, elf);
  };

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'modules-test-'));
    // kvm-amd -> kvm, ccp ; kvm -> irqbypass ; vhost_vsock -> vhost, vsock ; vhost -> vhost_iotlb
    put('kernel/arch/x86/kvm/kvm-amd.ko', 'kvm,ccp');
    put('kernel/arch/x86/kvm/kvm.ko', 'irqbypass');
    put('kernel/virt/lib/irqbypass.ko', '');
    put('kernel/drivers/crypto/ccp/ccp.ko.gz', '');
    put('kernel/drivers/vhost/vhost_vsock.ko', 'vhost,vsock');
    put('kernel/drivers/vhost/vhost.ko', 'vhost_iotlb');
    put('kernel/drivers/vhost/vhost_iotlb.ko', '');
    put('kernel/net/vmw_vsock/vsock.ko', '');
    writeFileSync(join(root, 'modules.builtin'), 'kernel/lib/crc32c.ko\n');
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const names = (modules: { name: string }[]): string[] => modules.map((m) => m.name);

  it('reads key=value pairs from an ELF .modinfo section and rejects what is not a module', () => {
    const info = readModinfo(fakeModule(['depends=a,b', 'alias=x', 'alias=y', 'garbage']));
    expect(info.get('depends')).to.deep.equal(['a,b']);
    expect(info.get('alias')).to.deep.equal(['x', 'y']);
    expect(() => readModinfo(Buffer.from('not elf at all, but long enough to have a header of sixty-four bytes'))).to.throw(
      ModuleResolutionError,
      /not an ELF/,
    );
    const truncated = fakeModule(['depends=']).subarray(0, 100);
    expect(() => readModinfo(truncated)).to.throw(ModuleResolutionError, /out of bounds/);
  });

  it('orders modules dependencies first, each once, from .modinfo when there is no modules.dep', async () => {
    const tree = await ModuleTree.open(root);
    expect(tree.size).to.equal(8);
    const order = names(await tree.loadOrder(['kvm-amd', 'vhost_vsock', 'kvm']));
    expect(order).to.deep.equal(['irqbypass', 'kvm', 'ccp', 'kvm_amd', 'vhost_iotlb', 'vhost', 'vsock', 'vhost_vsock']);
  });

  it('skips modules built into the kernel and names a missing module and who needs it', async () => {
    put('kernel/fs/ext4/ext4.ko', 'crc32c,jbd2');
    const tree = await ModuleTree.open(root);
    await expectReject(tree.loadOrder(['ext4']), /kernel module jbd2 \(needed by ext4\) not found/);
    put('kernel/fs/jbd2/jbd2.ko', 'crc32c');
    expect(names(await (await ModuleTree.open(root)).loadOrder(['ext4']))).to.deep.equal(['jbd2', 'ext4']);
    await expectReject(tree.loadOrder(['nonexistent']), /kernel module nonexistent not found/);
  });

  it('reports a dependency cycle instead of looping', async () => {
    put('kernel/a.ko', 'b');
    put('kernel/b.ko', 'a');
    await expectReject((await ModuleTree.open(root)).loadOrder(['a']), /cycle/);
  });

  it('writes a modules.dep that, read back, gives the same load order', async () => {
    const tree = await ModuleTree.open(root);
    const order = await tree.loadOrder(['kvm_amd', 'vhost_vsock']);
    const dep = await formatModulesDep(tree, order);
    expect(dep).to.include('kernel/arch/x86/kvm/kvm-amd.ko: kernel/drivers/crypto/ccp/ccp.ko.gz kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko\n');
    writeFileSync(join(root, 'modules.dep'), dep);
    // With modules.dep present the .modinfo sections are not read: a broken module file proves it.
    writeFileSync(join(root, 'kernel/virt/lib/irqbypass.ko'), 'not an ELF file');
    const fromDep = await ModuleTree.open(root);
    expect(names(await fromDep.loadOrder(['kvm_amd', 'vhost_vsock']))).to.deep.equal(names(order));
    await expectReject(
      formatModulesDep(
        tree,
        order.filter((m) => m.name !== 'kvm'),
      ),
      /needs kvm, which is not in the set/,
    );
  });

  it('reads .ko.xz modules with the system xz', async function () {
    if (!hasProgram('xz')) this.skip();
    put('kernel/drivers/virtio/virtio_blk.ko.xz', 'virtio,virtio_ring');
    put('kernel/drivers/virtio/virtio.ko.xz', 'virtio_ring');
    put('kernel/drivers/virtio/virtio_ring.ko.xz', '');
    const tree = await ModuleTree.open(root);
    expect(names(await tree.loadOrder(['virtio-blk']))).to.deep.equal(['virtio_ring', 'virtio', 'virtio_blk']);
    expect(tree.module('virtio_blk')?.relativePath).to.equal('kernel/drivers/virtio/virtio_blk.ko.xz');
  });

  it('resolves the KVM and virtio modules of the real Debian kernel in load order', async function () {
    this.timeout(300_000);
    const kernel = await ensureDebianKernel();
    const tree = await ModuleTree.open(kernel.modulesDir);
    const kvm = names(await tree.loadOrder(['kvm_amd']));
    expect([...kvm].sort()).to.deep.equal(['ccp', 'irqbypass', 'kvm', 'kvm_amd']);
    expect(kvm.indexOf('irqbypass')).to.be.lessThan(kvm.indexOf('kvm'));
    expect(kvm.at(-1)).to.equal('kvm_amd');
    const blk = names(await tree.loadOrder(['virtio_blk', 'virtio_mmio', 'ext4']));
    for (const [before, after] of [
      // Debian's 6.1 kernels differ on whether virtio_ring needs virtio; both come before their users.
      ['virtio_ring', 'virtio_blk'],
      ['virtio_ring', 'virtio_mmio'],
      ['virtio', 'virtio_blk'],
      ['virtio', 'virtio_mmio'],
      ['jbd2', 'ext4'],
      ['mbcache', 'ext4'],
    ]) {
      expect(blk.indexOf(before ?? ''), `${before} before ${after}`).to.be.within(0, blk.indexOf(after ?? '') - 1);
    }
  });
});
