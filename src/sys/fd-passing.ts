// Passing a file descriptor to another process over a Unix socket (SCM_RIGHTS), as runc hands the pty master of
// `create --console-socket` to the engine (conmon, containerd's shim): one message whose data is the pty's path
// and whose control message carries the descriptor.
import { koffi } from './koffi.js';
import { constant, cStruct, encodeExact } from './abi.js';
import { iovec } from './iovec.js';
import { check, close } from './sys.js';

const libc = koffi.load('libc.so.6');
const c = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  connect: libc.func('int connect(int fd, const void *addr, uint32_t len)'),
  sendmsg: libc.func('long sendmsg(int fd, const void *msg, int flags)'),
  // memmove(p, p, 0) returns p: a buffer's address, for the pointers inside msghdr.
  addressOf: libc.func('memmove', 'uintptr_t', ['void *', 'void *', 'size_t']),
};

const AF_UNIX = constant('AF_UNIX', 'sys/socket.h', 1);
const SOCK_STREAM = constant('SOCK_STREAM', 'sys/socket.h', 1);
const SOCK_CLOEXEC = constant('SOCK_CLOEXEC', 'sys/socket.h', 0o2000000);
const SOL_SOCKET = constant('SOL_SOCKET', 'sys/socket.h', 1);
const SCM_RIGHTS = constant('SCM_RIGHTS', 'sys/socket.h', 1);
const MSG_NOSIGNAL = constant('MSG_NOSIGNAL', 'sys/socket.h', 0x4000);
/** Control space for one int and the length cmsg_len records for it. */
const CMSG_SPACE_INT = constant('CMSG_SPACE(sizeof(int))', 'sys/socket.h', 24);
const CMSG_LEN_INT = constant('CMSG_LEN(sizeof(int))', 'sys/socket.h', 20);

const SUN_PATH_BYTES = 108;
const sockaddrUn = cStruct('struct sockaddr_un', 'sys/un.h', { sun_family: 'uint16_t', sun_path: koffi.array('uint8_t', SUN_PATH_BYTES) });
const msghdr = cStruct('struct msghdr', 'sys/socket.h', {
  msg_name: 'uintptr_t',
  msg_namelen: 'uint32_t',
  msg_iov: 'uintptr_t',
  msg_iovlen: 'size_t',
  msg_control: 'uintptr_t',
  msg_controllen: 'size_t',
  msg_flags: 'int',
});
const cmsghdr = cStruct('struct cmsghdr', 'sys/socket.h', { cmsg_len: 'size_t', cmsg_level: 'int', cmsg_type: 'int' });

export class FdPassingError extends Error {
  override readonly name = 'FdPassingError';
}

/** Connects to the Unix socket at `socketPath` and sends `fd` in one message whose data is `name`. */
export function sendFd(socketPath: string, fd: number, name: string): void {
  const path = Buffer.from(socketPath);
  if (path.length >= SUN_PATH_BYTES) throw new FdPassingError(`${socketPath}: a Unix socket path must be under ${SUN_PATH_BYTES} bytes`);
  const sun_path = new Uint8Array(SUN_PATH_BYTES);
  sun_path.set(path);
  const address = encodeExact(sockaddrUn, { sun_family: AF_UNIX, sun_path });
  const socket = check(c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), 'socket');
  try {
    check(c.connect(socket, address, sockaddrUn.size), `connect ${socketPath}`);
    const data = Buffer.from(name);
    const control = Buffer.alloc(CMSG_SPACE_INT);
    encodeExact(cmsghdr, { cmsg_len: BigInt(CMSG_LEN_INT), cmsg_level: SOL_SOCKET, cmsg_type: SCM_RIGHTS }, control);
    control.writeInt32LE(fd, cmsghdr.size);
    const iov = encodeExact(iovec, { iov_base: BigInt(c.addressOf(data, data, 0)), iov_len: BigInt(data.length) });
    const message = encodeExact(msghdr, {
      msg_iov: BigInt(c.addressOf(iov, iov, 0)),
      msg_iovlen: 1n,
      msg_control: BigInt(c.addressOf(control, control, 0)),
      msg_controllen: BigInt(control.length),
    });
    const sent = Number(check(Number(c.sendmsg(socket, message, MSG_NOSIGNAL)), `sendmsg ${socketPath}`));
    if (sent !== data.length) throw new FdPassingError(`sendmsg ${socketPath}: sent ${sent} of ${data.length} bytes`);
  } finally {
    close(socket);
  }
}
