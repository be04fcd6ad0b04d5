// The stock Debian kernel's vmw_vsock_virtio_transport on ts-vmm's vsock device, through
// `ts-vmm boot --vsock`, with Debian's socat in the guest and this process as the host end over the
// Unix-socket protocol: 64 MiB host->guest, hashed by the guest, and the same bytes guest->host as
// the guest received them, hashed here; then 16 connections open at once, each carrying its own 1 MiB
// that the guest hashes and answers on the same connection. The host makes all the data: in the lab
// the guest runs nested under TCG, where even reading /dev/urandom is slow, so the guest only
// forwards and hashes.
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ensureBusybox, ensureDebianKernel } from '../../src/assets/debian.js';
import { writeInitramfs } from '../../src/initramfs/builder.js';
import { ModuleTree, readModuleImage } from '../../src/initramfs/modules.js';
import { findProgram, sharedLibraries } from '../../src/oci/host-programs.js';
import { tsVmmBoot } from '../vmm/guest-fixtures.js';

// 64 MiB each way under nested TCG: about 90 s on an idle 2-core host, several times that when it is busy.
const BOOT_TIMEOUT_MS = 480_000;
const GUEST_CID = 3;
const BULK_BYTES = 64 << 20;
const CONNECTIONS = 16;
const PER_CONNECTION_BYTES = 1 << 20;
/** Guest ports: bulk host->guest, the hashing service, the host's "finished" signal; host port for bulk guest->host. */
const PORT = { bulkIn: 6000, hashed: 7000, finished: 7999, bulkOut: 5000 } as const;

const digest = (algorithm: string, data: Uint8Array): string => createHash(algorithm).update(data).digest('hex');

/**
 * The guest's /init. The bulk stream goes through tee into a FIFO that busybox md5sum reads (md5 is
 * the cheapest of busybox's hashes under TCG) and on to the host over a guest-initiated connection,
 * so both directions and the hash run at once. Port `hashed` answers each connection with the MD5 of
 * what it carried (no echo: socat forwarding a stream back through a pipe or a child of its own can
 * block in a write that only its own next read would let finish).
 */
function initScript(modules: readonly string[]): string {
  return [
    'mount -t proc proc /proc',
    'mount -t sysfs sys /sys',
    'mount -t devtmpfs dev /dev',
    'mount -t tmpfs tmp /tmp',
    ...modules.map((m) => `insmod /modules/${m}.ko`),
    // -t: wait for md5sum's answer however long the (nested, emulated) guest takes after the host's EOF.
    `socat -t 60 VSOCK-LISTEN:${PORT.hashed},fork SYSTEM:md5sum &`,
    'mkfifo /tmp/bulk',
    '(md5sum < /tmp/bulk | cut -d" " -f1 | sed "s/^/guest-md5=/") & hashing=$!',
    `socat -u VSOCK-LISTEN:${PORT.bulkIn} - | tee /tmp/bulk | socat -u - VSOCK-CONNECT:2:${PORT.bulkOut} || echo "bulk-forward-failed=$?"`,
    'wait $hashing',
    `socat -u VSOCK-LISTEN:${PORT.finished} - >/dev/null`,
    'poweroff -f',
  ].join('\n');
}

/**
 * One host-initiated connection (`CONNECT <port>` on the device's socket): the socket, paused, once
 * the guest accepted; undefined if it refused (no listener yet, or the device is not up).
 */
function tryConnect(uds: string, port: number): Promise<net.Socket | undefined> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(uds);
    let reply = Buffer.alloc(0);
    const refused = (): void => {
      sock.destroy();
      resolve(undefined);
    };
    const onData = (d: Buffer): void => {
      reply = Buffer.concat([reply, d]);
      const end = reply.indexOf('\n');
      if (end < 0) return;
      sock.pause();
      sock.off('data', onData).off('error', refused).off('close', refused);
      const line = reply.subarray(0, end).toString('latin1');
      if (!/^OK \d+$/.test(line)) {
        sock.destroy();
        reject(new Error(`vsock device answered CONNECT ${port} with ${JSON.stringify(line)}`));
        return;
      }
      if (end + 1 < reply.length) sock.unshift(reply.subarray(end + 1));
      resolve(sock);
    };
    sock.on('data', onData).on('error', refused).on('close', refused);
    sock.write(`CONNECT ${port}\n`);
  });
}

/** Connects to guest `port`, retrying until the guest listens there or the VM is gone. */
async function connectToGuest(uds: string, port: number, vmRunning: () => boolean): Promise<net.Socket> {
  while (vmRunning()) {
    const sock = await tryConnect(uds, port);
    if (sock) return sock;
    await delay(200);
  }
  throw new Error(`the guest never accepted a connection on vsock port ${port}`);
}

/** Everything `sock` delivers until its end (or until it fails or closes: the caller checks the length). */
function drain(sock: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', () => {});
    sock.on('close', () => resolve(Buffer.concat(chunks)));
    sock.resume();
  });
}

/**
 * The first connection made to the listener at `socketPath`, read to its end. Fails if `vmEnded`
 * settles before anyone connected.
 */
function acceptOne(socketPath: string, vmEnded: Promise<unknown>): Promise<Buffer> {
  const server = net.createServer();
  const received = new Promise<Buffer>((resolve, reject) => {
    let connected = false;
    server.once('connection', (sock) => {
      connected = true;
      server.close();
      void drain(sock).then(resolve);
    });
    void vmEnded.finally(() => {
      server.close();
      if (!connected) reject(new Error(`the guest never connected to ${path.basename(socketPath)}`));
    });
  });
  server.listen(socketPath);
  return received;
}

/** Sends `data`, ends the write side and reads the answer to its end. */
function exchange(sock: net.Socket, data: Buffer): Promise<Buffer> {
  const answer = drain(sock);
  sock.end(data);
  return answer;
}

/** `received` equals `sent`: same length and same SHA-256 (any byte lost, reordered or corrupted differs). */
function expectSame(what: string, received: Buffer, sent: Buffer): void {
  expect(received.length, `${what}: bytes received`).to.equal(sent.length);
  expect(digest('sha256', received), `${what}: SHA-256 of the bytes received`).to.equal(digest('sha256', sent));
}

describe('Linux vsock on the ts-vmm vsock device @kvm', function () {
  this.timeout(BOOT_TIMEOUT_MS + 60_000);

  it('moves 64 MiB each way intact and carries 16 connections open at once', async () => {
    const [kernel, busybox] = await Promise.all([ensureDebianKernel(), ensureBusybox()]);
    const modules = await (await ModuleTree.open(kernel.modulesDir)).loadOrder(['virtio_mmio', 'vmw_vsock_virtio_transport']);
    const socat = findProgram('socat');
    if (socat === undefined) throw new Error('socat not found (Debian package socat)');
    const socatFiles = new Set([socat, ...(await sharedLibraries(socat))]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-vmm-linux-vsock-'));
    const uds = path.join(dir, 'vsock');
    try {
      const initrd = path.join(dir, 'initrd.cpio');
      await writeInitramfs(initrd, 'none', async (b) => {
        for (const d of ['proc', 'sys', 'dev', 'tmp', 'modules']) await b.mkdirp(d);
        await b.hostFile(busybox.path, 'bin/busybox');
        for (const m of modules) await b.file(`modules/${m.name}.ko`, await readModuleImage(m.path));
        for (const f of socatFiles) await b.hostFile(f, f.slice(1));
        await b.file('init', `#!/bin/busybox sh\n/bin/busybox --install -s /bin\n${initScript(modules.map((m) => m.name))}\n`, { mode: 0o755 });
      });
      const bulk = randomBytes(BULK_BYTES);
      const perConnection = Array.from({ length: CONNECTIONS }, () => randomBytes(PER_CONNECTION_BYTES));

      let vmRunning = true;
      const booted = tsVmmBoot(
        ['--kernel', kernel.vmlinuz, '--initrd', initrd, '--cmdline', 'console=ttyS0 quiet', '--vsock', `${GUEST_CID},${uds}`],
        BOOT_TIMEOUT_MS,
      ).finally(() => {
        vmRunning = false;
      });
      const bulkOut = acceptOne(`${uds}_${PORT.bulkOut}`, booted);
      const host = (async () => {
        const bulkIn = await connectToGuest(uds, PORT.bulkIn, () => vmRunning);
        bulkIn.on('error', () => {});
        bulkIn.end(bulk);
        const bulkReturned = await bulkOut;

        // All 16 are accepted and open before any data moves.
        const sockets = await Promise.all(perConnection.map(() => connectToGuest(uds, PORT.hashed, () => vmRunning)));
        const answers = await Promise.all(sockets.map((s, i) => exchange(s, perConnection[i]!)));

        const finished = await connectToGuest(uds, PORT.finished, () => vmRunning);
        finished.end();
        return { bulkReturned, answers };
      })();
      // Whatever the host side does, the VM's end settles it: its sockets close with ts-vmm.
      const [vm, result] = await Promise.all([booted, host.catch((e: Error) => e)]);
      const transcript = `${vm.stdout.slice(-3000)}\n--- ts-vmm stderr ---\n${vm.stderr.slice(-2000)}`;
      if (result instanceof Error) throw new Error(`${result.message}\n${transcript}`);
      expect(vm.status, transcript).to.equal(0);
      expect(vm.stdout, transcript).to.not.contain('bulk-forward-failed');
      expect(vm.stdout, `the guest's MD5 of the 64 MiB it received\n${transcript}`).to.contain(`guest-md5=${digest('md5', bulk)}`);
      expectSame('64 MiB guest->host (what the guest received, sent back)', result.bulkReturned, bulk);
      result.answers.forEach((answer, i) => {
        expect(answer.toString('latin1'), `the guest's MD5 of connection ${i}`).to.equal(`${digest('md5', perConnection[i]!)}  -\n`);
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
