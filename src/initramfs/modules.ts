// Kernel module dependency resolution for building an initramfs: which .ko files to carry and in
// which order to insmod them. A tree unpacked with `dpkg -x` has no modules.dep (depmod runs in the
// package's postinst), so dependencies then come from each module's own `.modinfo` section — the
// same `depends=` field depmod reads — parsed here from the ELF file. That avoids needing kmod on the
// host. Compressed modules (.ko.xz, .ko.zst) are inflated with the system `xz`/`zstd`; .ko.gz with zlib.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';

const execFileAsync = promisify(execFile);

export interface KernelModule {
  /** Canonical name: `kvm_amd` (the kernel treats `-` and `_` alike in module names). */
  readonly name: string;
  /** Path relative to the modules directory, as modules.dep spells it: `kernel/arch/x86/kvm/kvm-amd.ko`. */
  readonly relativePath: string;
  /** Absolute host path. */
  readonly path: string;
}

export class ModuleResolutionError extends Error {
  override readonly name = 'ModuleResolutionError';
}

const MODULE_SUFFIX = /\.ko(\.xz|\.zst|\.gz)?$/;

export const canonicalModuleName = (name: string): string => basename(name).replace(MODULE_SUFFIX, '').replace(/-/g, '_');

/** The key=value pairs of an ELF64 little-endian module's `.modinfo` section (keys may repeat). */
export function readModinfo(elf: Uint8Array, source = 'module'): Map<string, string[]> {
  const bad = (why: string): never => {
    throw new ModuleResolutionError(`${source}: ${why}`);
  };
  if (elf.length < 64 || elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46) bad('not an ELF file');
  if (elf[4] !== 2 || elf[5] !== 1) bad('not a 64-bit little-endian ELF file');
  const view = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const shoff = Number(view.getBigUint64(0x28, true));
  const shentsize = view.getUint16(0x3a, true);
  const shnum = view.getUint16(0x3c, true);
  const shstrndx = view.getUint16(0x3e, true);
  if (shentsize < 64 || shstrndx >= shnum || shoff + shnum * shentsize > elf.length) bad('section header table out of bounds');
  const section = (index: number): { name: number; offset: number; size: number } => {
    const at = shoff + index * shentsize;
    const offset = Number(view.getBigUint64(at + 24, true));
    const size = Number(view.getBigUint64(at + 32, true));
    if (offset + size > elf.length) bad(`section ${index} out of bounds`);
    return { name: view.getUint32(at, true), offset, size };
  };
  const names = section(shstrndx);
  const decoder = new TextDecoder();
  const nameAt = (offset: number): string => {
    const start = names.offset + offset;
    const end = elf.indexOf(0, start);
    if (offset >= names.size || end < 0 || end > names.offset + names.size) bad('section name out of bounds');
    return decoder.decode(elf.subarray(start, end));
  };
  const info = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (nameAt(s.name) !== '.modinfo') continue;
    for (const entry of decoder.decode(elf.subarray(s.offset, s.offset + s.size)).split('\0')) {
      const eq = entry.indexOf('=');
      if (eq <= 0) continue;
      const key = entry.slice(0, eq);
      info.set(key, [...(info.get(key) ?? []), entry.slice(eq + 1)]);
    }
    return info;
  }
  return bad('has no .modinfo section');
}

/** The uncompressed ELF image of a module file, whatever compression its suffix names. */
export async function readModuleImage(path: string): Promise<Uint8Array> {
  const decompressor = path.endsWith('.xz') ? 'xz' : path.endsWith('.zst') ? 'zstd' : undefined;
  if (path.endsWith('.gz')) return gunzipSync(await readFile(path));
  if (decompressor === undefined) return readFile(path);
  try {
    const { stdout } = await execFileAsync(decompressor, ['-dc', path], { encoding: 'buffer', maxBuffer: 1 << 28 });
    return stdout;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT') throw new ModuleResolutionError(`${path} is compressed and '${decompressor}' is not installed`);
    throw new ModuleResolutionError(`${decompressor} -dc ${path} failed: ${err.stderr?.toString().trim() || err.message}`);
  }
}

/** The modules of one kernel (`/lib/modules/<version>`), with their dependencies. */
export class ModuleTree {
  private constructor(
    readonly directory: string,
    private readonly byName: Map<string, KernelModule>,
    private readonly builtin: Set<string>,
    /** Dependencies from modules.dep, when the tree has one; otherwise read lazily from .modinfo. */
    private readonly dependencies: Map<string, string[]>,
  ) {}

  static async open(directory: string): Promise<ModuleTree> {
    if (!existsSync(directory)) throw new ModuleResolutionError(`module directory ${directory} does not exist`);
    const byName = new Map<string, KernelModule>();
    const dependencies = new Map<string, string[]>();
    const add = (relativePath: string): KernelModule => {
      const module = { name: canonicalModuleName(relativePath), relativePath, path: join(directory, relativePath) };
      byName.set(module.name, module);
      return module;
    };
    const depFile = join(directory, 'modules.dep');
    if (existsSync(depFile)) {
      for (const [lineNo, line] of (await readFile(depFile, 'utf8')).split('\n').entries()) {
        if (line.trim() === '') continue;
        const colon = line.indexOf(':');
        if (colon <= 0) throw new ModuleResolutionError(`${depFile}:${lineNo + 1}: expected 'module.ko: deps...'`);
        const module = add(line.slice(0, colon).trim());
        // depmod lists the module to load last first; reversed, a depth-first walk loads as modprobe does.
        const deps = line
          .slice(colon + 1)
          .trim()
          .split(/\s+/)
          .filter(Boolean)
          .map(canonicalModuleName);
        dependencies.set(module.name, deps.reverse());
      }
    } else {
      // Synchronous: a kernel's tree is thousands of entries (Debian's package ships no modules.dep), and a
      // round trip through libuv's thread pool per directory cost a run 0.2 s against 0.02 s.
      const walk = (relativeDir: string): void => {
        for (const entry of readdirSync(join(directory, relativeDir), { withFileTypes: true })) {
          const relativePath = `${relativeDir}/${entry.name}`;
          if (entry.isDirectory()) walk(relativePath);
          else if (MODULE_SUFFIX.test(entry.name)) add(relativePath);
        }
      };
      for (const top of ['kernel', 'updates', 'extra']) if (existsSync(join(directory, top))) walk(top);
    }
    const builtinFile = join(directory, 'modules.builtin');
    const builtin = new Set(existsSync(builtinFile) ? (await readFile(builtinFile, 'utf8')).split('\n').filter(Boolean).map(canonicalModuleName) : []);
    return new ModuleTree(directory, byName, builtin, dependencies);
  }

  get size(): number {
    return this.byName.size;
  }

  module(name: string): KernelModule | undefined {
    return this.byName.get(canonicalModuleName(name));
  }

  isBuiltin(name: string): boolean {
    return this.builtin.has(canonicalModuleName(name));
  }

  /** Direct dependencies (names) of a module. */
  async dependenciesOf(name: string): Promise<string[]> {
    const module = this.require(name, name);
    let deps = this.dependencies.get(module.name);
    if (deps === undefined) {
      const info = readModinfo(await readModuleImage(module.path), module.path);
      deps = (info.get('depends') ?? [])
        .flatMap((d) => d.split(','))
        .filter(Boolean)
        .map(canonicalModuleName);
      this.dependencies.set(module.name, deps);
    }
    return deps;
  }

  /**
   * The modules to insmod, dependencies first, each once, for the requested names. Modules built
   * into the kernel are satisfied already and left out; an unknown name or a cycle is an error.
   */
  async loadOrder(names: readonly string[]): Promise<KernelModule[]> {
    const order: KernelModule[] = [];
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = async (name: string, neededBy: string): Promise<void> => {
      const canonical = canonicalModuleName(name);
      if (state.get(canonical) === 'done' || (this.isBuiltin(canonical) && !this.byName.has(canonical))) return;
      if (state.get(canonical) === 'visiting') throw new ModuleResolutionError(`module dependency cycle through ${canonical}`);
      const module = this.require(canonical, neededBy);
      state.set(canonical, 'visiting');
      for (const dep of await this.dependenciesOf(canonical)) await visit(dep, canonical);
      state.set(canonical, 'done');
      order.push(module);
    };
    for (const name of names) await visit(name, name);
    return order;
  }

  private require(name: string, neededBy: string): KernelModule {
    const module = this.byName.get(canonicalModuleName(name));
    if (module !== undefined) return module;
    const why = neededBy === name ? '' : ` (needed by ${neededBy})`;
    throw new ModuleResolutionError(`kernel module ${name}${why} not found under ${this.directory}`);
  }
}

/**
 * modules.dep text for a closed set of modules given in load order, in depmod's convention: each
 * line lists all transitive dependencies, the one to load last first (modprobe loads them backwards).
 */
export async function formatModulesDep(tree: ModuleTree, modules: readonly KernelModule[]): Promise<string> {
  const position = new Map(modules.map((m, i) => [m.name, i]));
  const lines: string[] = [];
  for (const module of modules) {
    const closure = await tree.loadOrder([module.name]);
    for (const dep of closure) {
      if (!position.has(dep.name)) throw new ModuleResolutionError(`${module.name} needs ${dep.name}, which is not in the set`);
    }
    const deps = closure
      .filter((m) => m.name !== module.name)
      .reverse()
      .map((m) => m.relativePath);
    lines.push(`${module.relativePath}:${deps.map((d) => ` ${d}`).join('')}`);
  }
  return `${lines.join('\n')}\n`;
}
