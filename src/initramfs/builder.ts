// Builds an initramfs file from host files and generated content. The kernel's unpacker does not
// create missing parent directories, so this layer tracks directories and emits each parent once,
// before anything inside it; CpioWriter below stays a strict encoder of exactly what it is given.
import { createWriteStream } from 'node:fs';
import { lstat, readFile, readdir, readlink, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { PassThrough, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, constants as zlibConstants } from 'node:zlib';
import { CpioError, CpioWriter, normalizeArchivePath, type EntryOptions } from './cpio.js';

/**
 * `none` suits large archives booted under emulation: the kernel then copies instead of inflating,
 * which under TCG is several times faster than gunzip. `gzip` suits archives that are stored or sent.
 */
export type Compression = 'none' | 'gzip';

export class InitramfsBuilder {
  private readonly directories = new Set<string>();
  private readonly symlinks = new Set<string>();

  constructor(private readonly cpio: CpioWriter) {}

  /** `mkdir -p`: creates the directory and any missing parents; existing ones are left as they are. */
  async mkdirp(path: string, options: EntryOptions = {}): Promise<void> {
    const parts = normalizeArchivePath(path).split('/');
    for (let i = 1; i <= parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (this.symlinks.has(dir)) throw new CpioError(`cannot create ${path}: ${dir} is a symlink in this archive`);
      if (this.directories.has(dir)) continue;
      this.directories.add(dir);
      await this.cpio.directory(dir, i === parts.length ? options : {});
    }
  }

  async file(path: string, data: Uint8Array | string, options: EntryOptions = {}): Promise<void> {
    await this.parentOf(path);
    await this.cpio.file(path, typeof data === 'string' ? Buffer.from(data, 'utf8') : data, options);
  }

  async symlink(path: string, target: string): Promise<void> {
    await this.parentOf(path);
    await this.cpio.symlink(path, target);
    this.symlinks.add(normalizeArchivePath(path));
  }

  async device(path: string, kind: 'char' | 'block', major: number, minor: number, options: EntryOptions = {}): Promise<void> {
    await this.parentOf(path);
    await this.cpio.device(path, kind, major, minor, options);
  }

  /**
   * Copies one host file to `archivePath` keeping its permission bits. Symlinks are followed: the
   * archive gets the content, because the link's target is usually not part of the archive.
   */
  async hostFile(hostPath: string, archivePath: string): Promise<void> {
    const info = await stat(hostPath);
    if (!info.isFile()) throw new Error(`${hostPath} is not a regular file`);
    await this.file(archivePath, await readFile(hostPath), { mode: info.mode & 0o7777 });
  }

  /**
   * Copies a host directory tree under `archiveDir`, keeping modes and symlinks as they are.
   * `include` sees paths relative to `hostDir` (with `/`), and prunes a whole directory when false.
   */
  async hostTree(hostDir: string, archiveDir: string, include: (relative: string) => boolean = () => true): Promise<void> {
    await this.mkdirp(archiveDir);
    const walk = async (relative: string): Promise<void> => {
      const entries = await readdir(join(hostDir, relative), { withFileTypes: true });
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const entry of entries) {
        const rel = relative === '' ? entry.name : `${relative}/${entry.name}`;
        if (!include(rel)) continue;
        const host = join(hostDir, rel);
        const target = posix.join(archiveDir, rel);
        if (entry.isDirectory()) {
          await this.mkdirp(target, { mode: (await lstat(host)).mode & 0o7777 });
          await walk(rel);
        } else if (entry.isSymbolicLink()) {
          await this.symlink(target, await readlink(host));
        } else if (entry.isFile()) {
          await this.hostFile(host, target);
        }
      }
    };
    await walk('');
  }

  private async parentOf(path: string): Promise<void> {
    const parent = posix.dirname(normalizeArchivePath(path));
    if (parent !== '.') await this.mkdirp(parent);
  }
}

/**
 * Writes an initramfs to `path`: `build` adds the entries, then the trailer is appended and the file
 * flushed. Returns the size of the file written.
 */
export async function writeInitramfs(path: string, compression: Compression, build: (builder: InitramfsBuilder) => Promise<void>): Promise<number> {
  const file = createWriteStream(path, { mode: 0o644 });
  const head: Transform = compression === 'gzip' ? createGzip({ level: zlibConstants.Z_BEST_SPEED }) : new PassThrough({ highWaterMark: 1 << 20 });
  const flushed = pipeline(head, file);
  // A write error would otherwise leave `build` waiting forever for a 'drain' that never comes.
  const failure = flushed.then(() => new Promise<never>(() => {}));
  const cpio = new CpioWriter(head);
  try {
    await Promise.race([
      (async () => {
        await build(new InitramfsBuilder(cpio));
        await cpio.finish();
        head.end();
      })(),
      failure,
    ]);
    await flushed;
  } catch (e) {
    head.destroy();
    throw e;
  }
  return file.bytesWritten;
}
