// A pty pair and its master passed over a Unix socket with SCM_RIGHTS, received by a C peer that uses recvmsg as
// conmon does: what it writes to the descriptor it got arrives at the slave, and the message data is the slave's path.
import { expect } from 'chai';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, mkdtempSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FdPassingError, sendFd } from '../../src/sys/fd-passing.js';
import { openPty } from '../../src/sys/pty.js';

const receiverSource = `#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv) {
  (void)argc;
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) return 2;
  int c = accept(s, 0, 0);
  char data[256] = {0};
  char control[CMSG_SPACE(sizeof(int))];
  struct iovec iov = { data, sizeof data - 1 };
  struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
  if (recvmsg(c, &m, 0) <= 0) return 3;
  struct cmsghdr *h = CMSG_FIRSTHDR(&m);
  if (!h || h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS || h->cmsg_len != CMSG_LEN(sizeof(int))) return 4;
  int fd;
  memcpy(&fd, CMSG_DATA(h), sizeof fd);
  printf("%s\\n", data);
  return write(fd, "ping\\n", 5) == 5 ? 0 : 5;
}
`;

describe('passing a pty master over a Unix socket (SCM_RIGHTS)', function () {
  this.timeout(60_000);
  let tmp: string;
  let receiver: string;

  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'ts-vmm-fd-passing-'));
    writeFileSync(join(tmp, 'receiver.c'), receiverSource);
    receiver = join(tmp, 'receiver');
    execFileSync('gcc', ['-Wall', '-Werror', '-o', receiver, join(tmp, 'receiver.c')]);
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it("the receiver gets the master: what it writes reaches the slave, and the message names the slave's path", async () => {
    const pty = openPty();
    try {
      expect(pty.slavePath).to.match(/^\/dev\/pts\/\d+$/);
      const socket = join(tmp, 'console.sock');
      const peer = spawn(receiver, [socket], { stdio: ['ignore', 'pipe', 'inherit'] });
      let said = '';
      peer.stdout.on('data', (d: Buffer) => (said += d.toString()));
      while (!existsSync(socket)) await new Promise((r) => setTimeout(r, 20));
      sendFd(socket, pty.master, pty.slavePath);
      const [status] = await once(peer, 'exit');
      expect(status).to.equal(0);
      expect(said).to.equal(`${pty.slavePath}\n`);
      const got = Buffer.alloc(16);
      const n = readSync(pty.slave, got);
      expect(got.subarray(0, n).toString()).to.equal('ping\n');
    } finally {
      closeSync(pty.master);
      closeSync(pty.slave);
    }
  });

  it('names the socket when nothing listens there, and refuses a path too long for sockaddr_un', () => {
    const pty = openPty();
    try {
      expect(() => sendFd(join(tmp, 'nobody.sock'), pty.master, pty.slavePath)).to.throw(/^connect .*nobody\.sock failed: ENOENT/);
      expect(() => sendFd(`/tmp/${'x'.repeat(120)}`, pty.master, pty.slavePath)).to.throw(FdPassingError, /under 108 bytes/);
    } finally {
      closeSync(pty.master);
      closeSync(pty.slave);
    }
  });
});
