// A host pseudo-terminal pair, as runc makes for `create --console-socket`: the master goes to the engine, the
// slave is the terminal the container's process (here, the VM's monitor relaying to the guest) reads and writes.
import { koffi } from './koffi.js';
import { cStruct } from './abi.js';
import { check, close, O_CLOEXEC, O_RDWR, open } from './sys.js';

const libc = koffi.load('libc.so.6');
const c = {
  posixOpenpt: libc.func('int posix_openpt(int flags)'),
  grantpt: libc.func('int grantpt(int fd)'),
  unlockpt: libc.func('int unlockpt(int fd)'),
  ptsnameR: libc.func('int ptsname_r(int fd, _Out_ char *buf, size_t buflen)'),
  tcgetattr: libc.func('int tcgetattr(int fd, _Out_ uint8_t *termios)'),
  tcsetattr: libc.func('int tcsetattr(int fd, int action, const uint8_t *termios)'),
  cfmakeraw: libc.func('void cfmakeraw(_Inout_ uint8_t *termios)'),
};

// Only its size matters here (cfmakeraw edits it); the fields are declared so the ABI test checks the layout.
const termios = cStruct('struct termios', 'termios.h', {
  c_iflag: 'uint32_t',
  c_oflag: 'uint32_t',
  c_cflag: 'uint32_t',
  c_lflag: 'uint32_t',
  c_line: 'uint8_t',
  c_cc: koffi.array('uint8_t', 32),
  c_ispeed: 'uint32_t',
  c_ospeed: 'uint32_t',
});
const TCSANOW = 0;

const O_NOCTTY = 0o400;

export interface PtyPair {
  readonly master: number;
  readonly slave: number;
  /** The slave's path, /dev/pts/N. */
  readonly slavePath: string;
}

export function openPty(): PtyPair {
  const master = check(c.posixOpenpt(O_RDWR | O_NOCTTY | O_CLOEXEC), 'posix_openpt');
  try {
    check(c.grantpt(master), 'grantpt');
    check(c.unlockpt(master), 'unlockpt');
    const name = Buffer.alloc(128);
    // ptsname_r returns the error number itself rather than setting errno.
    const failed = c.ptsnameR(master, name, name.length) as number;
    if (failed !== 0) check(-1, 'ptsname_r');
    const slavePath = name.toString('latin1').replace(/\0.*$/s, '');
    const slave = open(slavePath, O_RDWR | O_NOCTTY | O_CLOEXEC);
    try {
      // The slave passes bytes through untouched: the guest's own pty already did the terminal's line
      // discipline (ONLCR, echo, ICRNL), and doing it twice doubles every CR.
      const settings = Buffer.alloc(termios.size);
      check(c.tcgetattr(slave, settings), 'tcgetattr');
      c.cfmakeraw(settings);
      check(c.tcsetattr(slave, TCSANOW, settings), 'tcsetattr');
    } catch (e) {
      close(slave);
      throw e;
    }
    return { master, slave, slavePath };
  } catch (e) {
    close(master);
    throw e;
  }
}
