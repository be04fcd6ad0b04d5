// The lab guest's initramfs: the stock Debian kernel's KVM modules, busybox, node with its shared
// libraries, the tools tests call, this project (built), an offline asset cache for nested guests,
// the caller's files and the plan, and an /init that loads KVM and hands over to the guest agent.
import { CONFIDENTIAL_MODULES } from '../oci/confidential-initramfs.js';
import { existsSync, lstatSync, realpathSync } from 'node:fs';
import { dirname, join, posix, relative } from 'node:path';
import { ensureXtsLibrary } from '../luks/xts.js';
import { projectRoot } from '../sys/project-paths.js';
import { COMPLETE_MARKER, ensureBusybox, ensureDebianKernel, unpackedPath, type AssetOptions, type DebianKernel } from '../assets/debian.js';
import { writeInitramfs, type InitramfsBuilder } from '../initramfs/builder.js';
import { ModuleTree, formatModulesDep } from '../initramfs/modules.js';
import { findProgram, sharedLibraries } from '../oci/host-programs.js';
import type { LabPlan } from './protocol.js';

/** Where things live inside the lab guest. */
export const LAB_PATHS = {
  project: '/lab/project',
  cache: '/lab/cache',
  plan: '/lab/plan.json',
  resultPort: '/dev/ttyS1',
} as const;

/** What the lab guest itself loads: KVM for AMD (SVM) and vhost-vsock for nested guests' vsock. */
export const LAB_MODULES = ['irqbypass', 'kvm', 'ccp', 'kvm_amd', 'vhost_iotlb', 'vhost', 'vsock', 'vmw_vsock_virtio_transport_common', 'vhost_vsock'];

/**
 * Modules carried for nested guests (the stock kernel builds these drivers as modules): virtio over
 * MMIO and PCI, block, console, net, rng, vsock, and ext4 with the crc32c it asks for at mount time;
 * and what a confidential run's initramfs holds.
 */
export const NESTED_GUEST_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_mmio',
  'virtio_pci',
  'virtio_blk',
  'virtio_console',
  'virtio_net',
  'virtio_rng',
  'vsock',
  'vmw_vsock_virtio_transport_common',
  'vmw_vsock_virtio_transport',
  'ext4',
  'crc32c_generic',
];

/** Host programs tests run inside the lab, with the Debian package that provides each. */
export interface LabTool {
  readonly program: string;
  readonly debianPackage: string;
  readonly aliases?: readonly string[];
}

export const LAB_TOOLS: readonly LabTool[] = [
  // busybox-static's sh prefers its own applets to programs on PATH (FEATURE_SH_STANDALONE), so a
  // script's `mke2fs` would be busybox's; dash as /bin/sh runs what PATH names, as on the host.
  { program: 'dash', debianPackage: 'dash', aliases: ['sh'] },
  { program: 'mke2fs', debianPackage: 'e2fsprogs', aliases: ['mkfs.ext4', 'mkfs.ext2'] },
  { program: 'e2fsck', debianPackage: 'e2fsprogs', aliases: ['fsck.ext4'] },
  { program: 'debugfs', debianPackage: 'e2fsprogs' },
  { program: 'socat', debianPackage: 'socat' },
  { program: 'cpio', debianPackage: 'cpio' },
  { program: 'xz', debianPackage: 'xz-utils' },
  // A confidential run builds its initramfs around the host's cryptsetup.
  { program: 'cryptsetup', debianPackage: 'cryptsetup-bin' },
];

/** Real container engines driving ts-vmm as their OCI runtime (test/oci/engines-kvm.test.ts), carried only
 * into a lab that asks for them: about 115 MB that every other lab would unpack for nothing. */
export const LAB_ENGINES: readonly LabTool[] = [
  { program: 'containerd', debianPackage: 'containerd' },
  { program: 'containerd-shim-runc-v2', debianPackage: 'containerd' },
  { program: 'ctr', debianPackage: 'containerd' },
  { program: 'podman', debianPackage: 'podman' },
  { program: 'conmon', debianPackage: 'conmon' },
  // The engine benchmark's peer runtime (bench/engines.ts).
  { program: 'runc', debianPackage: 'runc' },
];

/** Host configuration the carried engines read at fixed paths (podman's policy, registries and defaults). */
export const LAB_CONFIGS: readonly { path: string; debianPackage: string }[] = [
  { path: '/etc/containers', debianPackage: 'golang-github-containers-common' },
  { path: '/usr/share/containers', debianPackage: 'golang-github-containers-common' },
];

/** A host file or directory (copied recursively) or literal content to place in the guest. */
export interface LabFile {
  /** Absolute path inside the guest. */
  readonly guestPath: string;
  readonly hostPath?: string;
  readonly content?: string | Uint8Array;
  readonly mode?: number;
}

export class LabImageError extends Error {
  override readonly name = 'LabImageError';
}

/** The guest path for a host file: its real location, so that merged-/usr symlinks resolve alike. */
const realLocation = (hostPath: string): string => join(realpathSync(dirname(hostPath)), posix.basename(hostPath));

/** Project files the guest needs: the build, the runtime dependencies, nothing host-specific. */
function projectFilter(relativePath: string): boolean {
  const parts = relativePath.split('/');
  const [top, second] = parts;
  if (top === '.git' || top === '.cache' || relativePath.endsWith('.log')) return false;
  if (top !== 'node_modules') return true;
  if (second === 'typescript' || second === '@types') return false;
  // koffi ships prebuilt native modules for 18 platforms and its C++ sources; the guest needs one.
  if (second === 'koffi') {
    if (parts[2] === 'src' || parts[2] === 'vendor' || parts[2] === 'doc') return false;
    if (parts[2] === 'build' && parts[3] === 'koffi' && parts[4] !== undefined) return parts[4] === `linux_${process.arch}`;
  }
  return true;
}

function initScript(kernel: DebianKernel, modulePaths: readonly string[]): string {
  const modules = join(LAB_PATHS.cache, unpackedPath(kernel.package.name), 'lib', 'modules', kernel.release);
  return `#!/usr/bin/busybox sh
# Lab guest init (the root is already a tmpfs, /tmp included): mount the basics, load KVM, run the plan via the guest agent, power off.
/usr/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ip link set lo up
mkdir -p /lib/modules
ln -s ${modules} /lib/modules/${kernel.release}
for m in ${modulePaths.map((p) => join(modules, p)).join(' ')}; do
  insmod "$m" || echo "lab: insmod $m failed"
done
stty -F ${LAB_PATHS.resultPort} raw -echo
echo "lab: starting agent"
node ${LAB_PATHS.project}/dist/src/lab/guest-agent.js ${LAB_PATHS.plan} ${LAB_PATHS.resultPort}
poweroff -f
`;
}

export interface LabImageOptions extends AssetOptions {
  readonly plan: LabPlan;
  readonly files?: readonly LabFile[];
  /** Carry the container engines (LAB_ENGINES) and their configuration. */
  readonly engines?: boolean;
}

export interface LabImage {
  readonly kernel: DebianKernel;
  /** Size of the initramfs written. */
  readonly bytes: number;
}

/** Writes the lab initramfs (uncompressed: under TCG copying beats inflating) to `path`. */
export async function buildLabImage(path: string, options: LabImageOptions): Promise<LabImage> {
  const kernel = await ensureDebianKernel(options);
  const busybox = await ensureBusybox(options);
  const tree = await ModuleTree.open(kernel.modulesDir);
  const labModules = await tree.loadOrder(LAB_MODULES);
  const carried = await tree.loadOrder([...LAB_MODULES, ...NESTED_GUEST_MODULES, ...CONFIDENTIAL_MODULES]);

  const programs: { host: string; aliases: readonly string[] }[] = [{ host: process.execPath, aliases: [] }];
  for (const tool of [...LAB_TOOLS, ...(options.engines ? LAB_ENGINES : [])]) {
    const host = findProgram(tool.program);
    if (host === undefined) throw new LabImageError(`${tool.program} not found on this host: install the Debian package ${tool.debianPackage}`);
    programs.push({ host, aliases: tool.aliases ?? [] });
  }
  const koffiNative = join(projectRoot(), 'node_modules', 'koffi', 'build', 'koffi', `linux_${process.arch}`, 'koffi.node');
  const libraries = new Set<string>();
  // The lab has no gcc: what the project compiles on first use is compiled here, carried in with dist/, and its
  // libraries with it.
  const xtsLibrary = ensureXtsLibrary();
  for (const binary of programs.map((p) => p.host)) {
    for (const lib of await sharedLibraries(binary)) libraries.add(lib);
  }
  for (const object of [...(existsSync(koffiNative) ? [koffiNative] : []), xtsLibrary]) {
    for (const lib of await sharedLibraries(object, true)) libraries.add(lib);
  }

  const bytes = await writeInitramfs(path, 'none', async (image: InitramfsBuilder) => {
    // Mirror the host's top-level symlinks (merged /usr) so that library paths ldd printed resolve.
    for (const top of ['bin', 'sbin', 'lib', 'lib64']) {
      const host = `/${top}`;
      if (existsSync(host) && lstatSync(host).isSymbolicLink()) await image.symlink(top, relative('/', realpathSync(host)));
      else await image.mkdirp(top);
    }
    for (const dir of ['usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'root', 'run']) await image.mkdirp(dir);
    await image.mkdirp('tmp', { mode: 0o1777 });
    await image.device('dev/console', 'char', 5, 1);
    await image.device('dev/null', 'char', 1, 3, { mode: 0o666 });
    await image.file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
    await image.file('etc/group', 'root:x:0:\n');
    await image.file('etc/hosts', '127.0.0.1 localhost\n::1 localhost\n');
    await image.file('etc/nsswitch.conf', 'passwd: files\ngroup: files\nhosts: files\n');
    if (existsSync('/etc/mke2fs.conf')) await image.hostFile('/etc/mke2fs.conf', 'etc/mke2fs.conf');
    for (const config of options.engines ? LAB_CONFIGS : []) {
      if (!existsSync(config.path)) throw new LabImageError(`${config.path} not found on this host: install the Debian package ${config.debianPackage}`);
      await image.hostTree(config.path, config.path);
    }

    await image.hostFile(busybox.path, 'usr/bin/busybox');
    // Host files the lab carries at their own path: a caller may name them again (a program's libraries).
    const carriedAtHostPath = new Set<string>();
    for (const lib of libraries) {
      carriedAtHostPath.add(realLocation(lib));
      await image.hostFile(lib, realLocation(lib));
    }
    for (const program of programs) {
      const guest = realLocation(program.host);
      carriedAtHostPath.add(guest);
      await image.hostFile(program.host, guest);
      for (const alias of program.aliases) await image.symlink(posix.join(posix.dirname(guest), alias), posix.basename(guest));
    }

    // The offline asset cache: the same layout src/assets reads, trimmed to what nested guests use.
    const cachedKernel = posix.join(LAB_PATHS.cache, unpackedPath(kernel.package.name));
    const cachedModules = posix.join(cachedKernel, 'lib', 'modules', kernel.release);
    await image.hostFile(kernel.vmlinuz, posix.join(cachedKernel, 'boot', `vmlinuz-${kernel.release}`));
    for (const module of carried) await image.hostFile(module.path, posix.join(cachedModules, module.relativePath));
    await image.file(posix.join(cachedModules, 'modules.dep'), await formatModulesDep(tree, carried));
    for (const extra of ['modules.builtin', 'modules.order']) {
      if (existsSync(join(kernel.modulesDir, extra))) await image.hostFile(join(kernel.modulesDir, extra), posix.join(cachedModules, extra));
    }
    await image.file(posix.join(cachedKernel, COMPLETE_MARKER), `${kernel.package.version}\n`);
    const cachedBusybox = posix.join(LAB_PATHS.cache, unpackedPath(busybox.package.name));
    await image.symlink(posix.join(cachedBusybox, 'bin', 'busybox'), '/usr/bin/busybox');
    await image.file(posix.join(cachedBusybox, COMPLETE_MARKER), `${busybox.package.version}\n`);

    await image.hostTree(projectRoot(), LAB_PATHS.project, projectFilter);
    for (const file of options.files ?? []) {
      if (!posix.isAbsolute(file.guestPath)) throw new LabImageError(`lab file path ${file.guestPath} must be absolute`);
      if (file.content !== undefined) {
        await image.file(file.guestPath, file.content, { mode: file.mode ?? 0o644 });
      } else if (file.hostPath !== undefined) {
        if (!existsSync(file.hostPath)) throw new LabImageError(`lab file ${file.hostPath} does not exist`);
        if (file.guestPath === realLocation(file.hostPath) && carriedAtHostPath.has(file.guestPath)) continue;
        if (lstatSync(file.hostPath).isDirectory()) await image.hostTree(file.hostPath, file.guestPath);
        else await image.hostFile(file.hostPath, file.guestPath);
      } else {
        throw new LabImageError(`lab file ${file.guestPath} has neither hostPath nor content`);
      }
    }
    await image.file(LAB_PATHS.plan, JSON.stringify(options.plan));
    await image.file(
      'init',
      initScript(
        kernel,
        labModules.map((m) => m.relativePath),
      ),
      { mode: 0o755 },
    );
  });
  return { kernel, bytes };
}
