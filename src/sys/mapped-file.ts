// Files mapped read-only instead of read into the heap. The kernel and the initrd are copied into guest RAM once,
// and a heap copy of them would stay resident for the whole run (until a major GC that may never come): 8 MiB of
// kernel and megabytes of initrd in every VMM. `release` drops the mapping's pages from this process
// (MADV_DONTNEED); a read after it is still correct, since a private read-only file mapping faults its pages back
// in from the page cache. The mapping itself is undone once its bytes are unreachable. As with QEMU's mapped
// initrd, a read past the end of a file truncated while mapped raises SIGBUS, so the bytes are read only while
// the VM is built.
import { fstatSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import {
  MADV_DONTNEED,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  O_RDONLY,
  PAGE_SIZE,
  PROT_NONE,
  PROT_READ,
  close,
  madvise,
  mmapAddress,
  mmapFixed,
  munmap,
  open,
  viewAt,
} from './sys.js';

export interface MappedFile {
  readonly bytes: Uint8Array;
  /** Drops the pages from this process's resident memory; `bytes` stays readable. */
  release(): void;
}

const unmapWhenUnreachable = new FinalizationRegistry<{ address: bigint; length: number }>((mapping) => munmap(mapping));
const EMPTY: MappedFile = { bytes: new Uint8Array(0), release: () => undefined };

/**
 * Files one after the other in one mapping, as a bootloader loads several initrds, without copying them.
 * `undefined` where that cannot be done: a file that is not a regular file (a pipe, a device), or one followed by
 * another that is not a whole number of pages long (mmap places a file only at a page boundary).
 */
export function mapFiles(paths: readonly string[]): MappedFile | undefined {
  // Looked at before anything is opened: opening a FIFO meets its writer, which must find its reader still there.
  if (!paths.every((path) => statSync(path).isFile())) return undefined;
  const fds: number[] = [];
  try {
    for (const path of paths) fds.push(open(path, O_RDONLY));
    const stats = fds.map((fd) => fstatSync(fd));
    if (!stats.every((stat) => stat.isFile())) return undefined;
    const sizes = stats.map((stat) => stat.size);
    if (sizes.slice(0, -1).some((size) => size % PAGE_SIZE !== 0)) return undefined;
    const length = sizes.reduce((sum, size) => sum + size, 0);
    // mmap refuses an empty length; empty files have no pages to map or release.
    if (length === 0) return EMPTY;
    // The whole range is reserved first, so each file replaces only its own part of the reservation.
    const address = mmapAddress(length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, 'mmap (reserve)');
    const mapping = { address, length };
    try {
      let offset = 0;
      for (const [i, fd] of fds.entries()) {
        if (sizes[i]! > 0) mmapFixed(address + BigInt(offset), sizes[i]!, PROT_READ, MAP_PRIVATE, fd, 0, `mmap ${paths[i]}`);
        offset += sizes[i]!;
      }
    } catch (e) {
      munmap(mapping);
      throw e;
    }
    const bytes = viewAt(address, length);
    unmapWhenUnreachable.register(bytes.buffer, mapping);
    return { bytes, release: () => void madvise(address, length, MADV_DONTNEED, `madvise ${paths.join(', ')} MADV_DONTNEED`) };
  } finally {
    for (const fd of fds) close(fd);
  }
}

/**
 * The files' bytes one after the other: mapped where they can be, so that no copy need stay resident, and read into
 * the heap where they cannot (a copy left to the collector; `release` does nothing).
 */
export async function loadFiles(paths: readonly string[]): Promise<MappedFile> {
  const mapped = mapFiles(paths);
  if (mapped) return mapped;
  return { bytes: new Uint8Array(Buffer.concat(await Promise.all(paths.map((path) => readFile(path))))), release: () => undefined };
}
