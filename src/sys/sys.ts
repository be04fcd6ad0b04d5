// Thin, typed wrappers over the libc calls a VMM needs. Every failure becomes a SysError that names
// the call and the errno in words; nothing here ever returns a bare -1.
import { koffi } from './koffi.js';
import { constants } from 'node:os';
import { getSystemErrorMap } from 'node:util';
import { cStruct, constant } from './abi.js';

const libc = koffi.load('libc.so.6');

const c = {
  open: libc.func('int open(const char *path, int flags, int mode)'),
  close: libc.func('int close(int fd)'),
  ioctlInt: libc.func('ioctl', 'int', ['int', 'unsigned long', 'uintptr_t']),
  ioctlPtr: libc.func('ioctl', 'int', ['int', 'unsigned long', 'void *']),
  mmap: libc.func('mmap', 'void *', ['void *', 'size_t', 'int', 'int', 'int', 'int64_t']),
  munmap: libc.func('int munmap(void *addr, size_t len)'),
  madvise: libc.func('int madvise(void *addr, size_t len, int advice)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  read: libc.func('long read(int fd, void *buf, size_t count)'),
  write: libc.func('long write(int fd, const void *buf, size_t count)'),
  preadv: libc.func('long preadv(int fd, const void *iov, int iovcnt, int64_t offset)'),
  pwritev: libc.func('long pwritev(int fd, const void *iov, int iovcnt, int64_t offset)'),
  fallocate: libc.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
  gettid: libc.func('int gettid()'),
  epollCreate1: libc.func('int epoll_create1(int flags)'),
  epollCtl: libc.func('epoll_ctl', 'int', ['int', 'int', 'int', 'void *']),
  epollWait: libc.func('epoll_wait', 'int', ['int', 'void *', 'int', 'int']),
  tgkill: libc.func('int tgkill(int tgid, int tid, int sig)'),
  // memmove(dst, _, 0) returns dst: the portable way to turn an address back into a koffi pointer.
  pointerAt: libc.func('memmove', 'void *', ['uintptr_t', 'uintptr_t', 'size_t']),
};

export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
/** The host's page: what mmap maps, places and rounds lengths to on x86-64. */
export const PAGE_SIZE = 4096;
export const PROT_NONE = constant('PROT_NONE', 'sys/mman.h', 0);
export const PROT_READ = constant('PROT_READ', 'sys/mman.h', 1);
export const PROT_WRITE = constant('PROT_WRITE', 'sys/mman.h', 2);
export const MAP_SHARED = constant('MAP_SHARED', 'sys/mman.h', 1);
export const MAP_PRIVATE = constant('MAP_PRIVATE', 'sys/mman.h', 2);
export const MAP_FIXED = constant('MAP_FIXED', 'sys/mman.h', 0x10);
export const MAP_ANONYMOUS = constant('MAP_ANONYMOUS', 'sys/mman.h', 0x20);
export const MAP_NORESERVE = constant('MAP_NORESERVE', 'sys/mman.h', 0x4000);
export const MADV_DONTNEED = constant('MADV_DONTNEED', 'sys/mman.h', 4);
export const MADV_DONTFORK = constant('MADV_DONTFORK', 'sys/mman.h', 10);
export const MADV_HUGEPAGE = constant('MADV_HUGEPAGE', 'sys/mman.h', 14);
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, value]) => [value, name]));
const errnoMessages = getSystemErrorMap();

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

/** A failed system call: `KVM_CREATE_VM failed: EACCES — permission denied`. */
export class SysError extends Error {
  override readonly name = 'SysError';
  readonly call: string;
  readonly errno: number;
  readonly code: string;

  constructor(call: string, errno: number, hint?: string) {
    const code = errnoName(errno);
    const words = hint ?? errnoMessages.get(-errno)?.[1] ?? 'unknown error';
    super(`${call} failed: ${code} — ${words}`);
    this.call = call;
    this.errno = errno;
    this.code = code;
  }
}

/** Per-errno explanations a caller can supply where the generic text would mislead. */
export type ErrnoHints = Partial<Record<string, string>>;

/** The result of a libc call, or a SysError naming the call and its errno. */
export function check(result: number, call: string, hints?: ErrnoHints): number {
  if (result >= 0) return result;
  const errno = koffi.errno();
  throw new SysError(call, errno, hints?.[errnoName(errno)]);
}

export function open(path: string, flags: number, hints?: ErrnoHints): number {
  return check(c.open(path, flags | O_CLOEXEC, 0), `open ${path}`, hints);
}

export function close(fd: number): void {
  check(c.close(fd), 'close');
}

/** ioctl whose argument is an integer (or no argument). Returns the non-negative result. */
export function ioctlValue(fd: number, name: string, request: number, arg: number | bigint = 0, hints?: ErrnoHints): number {
  return check(c.ioctlInt(fd, request, arg), name, hints);
}

/** ioctl whose argument points at `buf` (the struct, read and/or written by the kernel). */
export function ioctlBuffer(fd: number, name: string, request: number, buf: Uint8Array, hints?: ErrnoHints): number {
  return check(c.ioctlPtr(fd, request, buf), name, hints);
}

/** ioctl that may fail in an expected way: returns -errno instead of throwing. */
export function ioctlRaw(fd: number, request: number, arg: number | bigint | Uint8Array): number {
  const r = typeof arg === 'object' ? c.ioctlPtr(fd, request, arg) : c.ioctlInt(fd, request, arg);
  return r >= 0 ? r : -koffi.errno();
}

export interface Mapping {
  /** Host virtual address of the mapping (valid in every thread of this process). */
  readonly address: bigint;
  readonly length: number;
  readonly bytes: Uint8Array;
}

export function mmap(length: number, prot: number, flags: number, fd = -1, offset = 0, call = 'mmap'): Mapping {
  const address = mmapAddress(length, prot, flags, fd, offset, call);
  return { address, length, bytes: viewAt(address, length) };
}

/** mmap(2) without a view of the mapping: for mappings larger than one typed array may be (guest RAM). */
export function mmapAddress(length: number, prot: number, flags: number, fd = -1, offset = 0, call = 'mmap'): bigint {
  const address = koffi.address(c.mmap(null, length, prot, flags, fd, offset)) as bigint;
  if (address === 0xffff_ffff_ffff_ffffn) check(-1, call);
  return address;
}

/** mmap(2) at `address`, replacing whatever this process had mapped there (MAP_FIXED): into a range it reserved. */
export function mmapFixed(address: bigint, length: number, prot: number, flags: number, fd: number, offset: number, call: string): void {
  const placed = koffi.address(c.mmap(c.pointerAt(address, 0, 0), length, prot, flags | MAP_FIXED, fd, offset)) as bigint;
  if (placed === 0xffff_ffff_ffff_ffffn) check(-1, call);
}

/** A view of memory this process already mapped, e.g. guest RAM re-opened in a worker thread. */
export function viewAt(address: bigint, length: number): Uint8Array {
  return new Uint8Array(koffi.view(c.pointerAt(address, 0, 0), length));
}

export function munmap(mapping: Pick<Mapping, 'address' | 'length'>): void {
  check(c.munmap(c.pointerAt(mapping.address, 0, 0), mapping.length), 'munmap');
}

/** madvise(2); returns false for EINVAL (advice this kernel does not support, e.g. no THP). */
export function madvise(address: bigint, length: number, advice: number, call: string): boolean {
  if (c.madvise(c.pointerAt(address, 0, 0), length, advice) === 0) return true;
  const errno = koffi.errno();
  if (errno === constants.errno.EINVAL) return false;
  throw new SysError(call, errno);
}

/** preadv(2) into the `count` struct iovecs at the start of `iov`; returns the bytes read. */
export function preadv(fd: number, iov: Uint8Array, count: number, position: number, call: string): number {
  return check(c.preadv(fd, iov, count, position), call);
}

/** pwritev(2) from the `count` struct iovecs at the start of `iov`; returns the bytes written. */
export function pwritev(fd: number, iov: Uint8Array, count: number, position: number, call: string): number {
  return check(c.pwritev(fd, iov, count, position), call);
}

// Hole punching and zeroing (virtio-blk DISCARD / WRITE_ZEROES).
export const FALLOC_FL_KEEP_SIZE = constant('FALLOC_FL_KEEP_SIZE', 'linux/falloc.h', 0x01);
export const FALLOC_FL_PUNCH_HOLE = constant('FALLOC_FL_PUNCH_HOLE', 'linux/falloc.h', 0x02);
export const FALLOC_FL_ZERO_RANGE = constant('FALLOC_FL_ZERO_RANGE', 'linux/falloc.h', 0x10);

/** fallocate(2); false when the file system does not support `mode` (EOPNOTSUPP). */
export function fallocate(fd: number, mode: number, offset: number, length: number, call: string): boolean {
  if (c.fallocate(fd, mode, offset, length) === 0) return true;
  const errno = koffi.errno();
  if (errno === constants.errno.EOPNOTSUPP) return false;
  throw new SysError(call, errno);
}

export function eventfd(initval = 0, flags = EFD_CLOEXEC): number {
  return check(c.eventfd(initval, flags), 'eventfd');
}

export function read(fd: number, buf: Uint8Array, call = 'read'): number {
  return check(Number(c.read(fd, buf, buf.length)), call);
}

export function write(fd: number, buf: Uint8Array, call = 'write'): number {
  return check(Number(c.write(fd, buf, buf.length)), call);
}

export function gettid(): number {
  return c.gettid();
}

export function tgkill(pid: number, tid: number, signal: number): void {
  check(c.tgkill(pid, tid, signal), 'tgkill');
}

/** struct epoll_event: packed on x86-64, so `data` sits at offset 4. */
export const epollEvent = cStruct('struct epoll_event', 'sys/epoll.h', { events: 'uint32', data: 'uint64' }, { packed: true });
export const EPOLLIN = constant('EPOLLIN', 'sys/epoll.h', 0x001);
export const EPOLLET = constant('EPOLLET', 'sys/epoll.h', 0x8000_0000);
export const EPOLL_CTL_ADD = constant('EPOLL_CTL_ADD', 'sys/epoll.h', 1);
export const EPOLL_CTL_DEL = constant('EPOLL_CTL_DEL', 'sys/epoll.h', 2);
export const EPOLL_CLOEXEC = constant('EPOLL_CLOEXEC', 'sys/epoll.h', 0o2000000);

export function epollCreate(): number {
  return check(c.epollCreate1(EPOLL_CLOEXEC), 'epoll_create1');
}

/** Adds or removes `fd`; the events epollWait() reports for it carry `fd` as their data. */
export function epollCtl(epfd: number, op: number, fd: number, events = EPOLLIN): void {
  const event = new Uint8Array(epollEvent.size);
  const view = new DataView(event.buffer);
  view.setUint32(0, events, true);
  view.setBigUint64(4, BigInt(fd), true);
  check(c.epollCtl(epfd, op, fd, event), 'epoll_ctl');
}

/**
 * Blocks until some fd is ready (or `timeoutMs` passes; -1 waits for ever) and returns the ready fds.
 * An interrupted wait returns no fds.
 */
export function epollWait(epfd: number, events: Uint8Array, timeoutMs = -1): number[] {
  const max = Math.floor(events.length / epollEvent.size);
  const n = c.epollWait(epfd, events, max, timeoutMs);
  if (n < 0) {
    const errno = koffi.errno();
    if (errno === constants.errno.EINTR) return [];
    throw new SysError('epoll_wait', errno);
  }
  return readyFds(events, n);
}

/**
 * epoll_wait without a timeout on a thread of libuv's pool; `done` gets the ready fds on this thread's event
 * loop. A failed or interrupted wait (its errno stays on the pool's thread) reports no fds. `events` must not be
 * touched until then.
 */
export function epollWaitAsync(epfd: number, events: Uint8Array, done: (fds: number[]) => void): void {
  c.epollWait.async(epfd, events, Math.floor(events.length / epollEvent.size), -1, (error: unknown, n: number) => {
    done(error || n < 0 ? [] : readyFds(events, n));
  });
}

function readyFds(events: Uint8Array, n: number): number[] {
  const view = new DataView(events.buffer, events.byteOffset, events.byteLength);
  return Array.from({ length: n }, (_, i) => Number(view.getBigUint64(i * epollEvent.size + 4, true)));
}
