import { expect } from 'chai';
import fc from 'fast-check';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_VSOCK_OP_CREDIT_REQUEST,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RST,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_SHUTDOWN_RCV,
  VIRTIO_VSOCK_SHUTDOWN_SEND,
} from '../../src/virtio/abi.js';
import { PACKETS_PER_PASS } from '../../src/virtio/vsock/device.js';
import { GuestStream, VsockGuest, until } from './vsock-guest.js';

const CID = 42;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A host program: connects to the device's socket and speaks the CONNECT protocol. */
async function hostConnect(uds: string, port: number): Promise<{ socket: net.Socket; reply: Promise<string>; data: Buffer[] }> {
  const socket = net.connect(uds);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const data: Buffer[] = [];
  const reply = new Promise<string>((resolve) => {
    let line = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      line = Buffer.concat([line, chunk]);
      const eol = line.indexOf(0x0a);
      if (eol < 0) return;
      socket.off('data', onData);
      if (line.length > eol + 1) data.push(line.subarray(eol + 1));
      socket.on('data', (d: Buffer) => data.push(d));
      resolve(line.subarray(0, eol).toString());
    };
    socket.on('data', onData);
    socket.once('close', () => resolve('closed'));
  });
  socket.write(`CONNECT ${port}\n`);
  return { socket, reply, data };
}

describe('virtio-vsock', function () {
  this.timeout(20000);
  let dir: string;
  let uds: string;
  let guest: VsockGuest;
  const servers: net.Server[] = [];
  const accepted: net.Socket[] = [];

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ts-vmm-vsock-'));
    uds = path.join(dir, 'v.sock');
  });

  afterEach(async () => {
    await guest?.stop();
    for (const s of servers.splice(0)) s.close();
    for (const s of accepted.splice(0)) s.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A host listener for guest-initiated connections to `port`. */
  async function hostListen(port: number, onConnection: (s: net.Socket) => void): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      accepted.push(socket);
      // The device closes its end when the guest is done with a connection (or resets it); a host
      // program still writing then gets EPIPE or ECONNRESET, which is not what these tests look at.
      socket.on('error', () => undefined);
      onConnection(socket);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(`${uds}_${port}`, resolve));
  }

  it('reports the guest CID in its configuration and refuses reserved CIDs', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    expect(guest.driver.readConfig(0, 8)).to.equal(BigInt(CID));
    const { VirtioVsock } = await import('../../src/virtio/vsock/device.js');
    for (const bad of [0, 1, 2, 2 ** 32]) {
      await VirtioVsock.create({ guestCid: bad, udsPath: path.join(dir, 'x') }).then(
        () => expect.fail(),
        (e: Error) => expect(e.message).to.match(/CID .* is invalid/),
      );
    }
  });

  it('host-initiated: CONNECT <port> reaches the guest listener, OK <host port> comes back, bytes flow both ways', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    const host = await hostConnect(uds, 5000);
    host.socket.write('early bytes;'); // sent before the guest accepted: kept, in order
    const s = await GuestStream.accept(guest, 5000);
    expect(s.hostPort).to.be.at.least(2 ** 30);
    expect(await host.reply).to.equal(`OK ${s.hostPort}`);
    host.socket.write('hello guest');
    expect(Buffer.from(await s.readExactly(23)).toString()).to.equal('early bytes;hello guest');
    await s.write(Buffer.from('hello host'));
    await until(() => Buffer.concat(host.data).toString() === 'hello host', 'data at the host');
    host.socket.destroy();
  });

  it('guest-initiated: connect(2, P) reaches the host listener at UDS_PATH_P', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    let hostSide: net.Socket | undefined;
    const got: Buffer[] = [];
    await hostListen(6000, (sock) => {
      hostSide = sock;
      sock.on('data', (d: Buffer) => got.push(d));
    });
    const s = new GuestStream(guest, 40000, 6000);
    expect(await s.connect()).to.equal(true);
    await s.write(Buffer.from('ping'));
    await until(() => Buffer.concat(got).toString() === 'ping', 'ping at the host');
    hostSide!.write('pong');
    expect(Buffer.from(await s.readExactly(4)).toString()).to.equal('pong');
  });

  it('hands the host socket the packets of one pass over the tx ring in one write', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    const got: Buffer[] = [];
    await hostListen(6001, (sock) => sock.on('data', (d: Buffer) => got.push(d)));
    const s = new GuestStream(guest, 40001, 6001);
    expect(await s.connect()).to.equal(true);
    const payloads = Array.from({ length: 8 }, () => randomBytes(1000));
    const { _write, _writev } = net.Socket.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
    let writes = 0;
    const counting = (write: (...args: unknown[]) => unknown) =>
      function (this: unknown, ...args: unknown[]) {
        writes++;
        return write.apply(this, args);
      };
    Object.assign(net.Socket.prototype, { _write: counting(_write!), _writev: counting(_writev!) });
    try {
      for (const payload of payloads) guest.send(s.header(VIRTIO_VSOCK_OP_RW), payload, false);
      guest.kickTx();
      await until(() => Buffer.concat(got).length === 8000, 'the 8 packets at the host');
    } finally {
      Object.assign(net.Socket.prototype, { _write, _writev });
    }
    expect(sha(Buffer.concat(got))).to.equal(sha(Buffer.concat(payloads)));
    expect(writes).to.equal(1);
  });

  it('answers a connect to a port nobody listens on with RST', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    expect(await new GuestStream(guest, 40001, 6001).connect()).to.equal(false);
  });

  it('host-initiated connect with no guest listener: the guest RST closes the host socket without OK', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    const host = await hostConnect(uds, 7000);
    const req = await guest.receive((p) => p.header.op === VIRTIO_VSOCK_OP_REQUEST);
    guest.send({ op: VIRTIO_VSOCK_OP_RST, srcPort: 7000, dstPort: req.header.srcPort });
    expect(await host.reply).to.equal('closed');
  });

  it('never gives a host CONNECT the host port of a guest-initiated connection to the same guest port', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    const firstHostPort = 2 ** 30; // where host-initiated connections start
    let hostSide: net.Socket | undefined;
    await hostListen(firstHostPort, (sock) => {
      hostSide = sock;
    });
    const guestInitiated = new GuestStream(guest, 5000, firstHostPort);
    expect(await guestInitiated.connect()).to.equal(true);
    await until(() => hostSide, 'the guest-initiated connection at its listener');
    const host = await hostConnect(uds, 5000);
    const req = await guest.receive((p) => p.header.op === VIRTIO_VSOCK_OP_REQUEST && p.header.dstPort === 5000, 'REQUEST to 5000');
    expect(req.header.srcPort).to.not.equal(firstHostPort);
    expect(guest.device.backend.connectionCount).to.equal(2);
    // The first connection is still the device's: a reset closes its host socket.
    guest.device.reset();
    await until(() => hostSide!.destroyed || hostSide!.readableEnded, 'the guest-initiated socket closed by the reset');
    host.socket.destroy();
  });

  it('counts host programs that have not sent CONNECT yet against the connection limit', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds, maxConnections: 4 });
    const sockets = await Promise.all(
      Array.from(
        { length: 10 },
        () =>
          new Promise<net.Socket>((resolve, reject) => {
            const s = net.connect(uds);
            s.on('error', () => undefined);
            s.once('connect', () => resolve(s)).once('error', reject);
          }),
      ),
    );
    for (const s of sockets) s.write('CONNECT 9000\n');
    await until(() => sockets.filter((s) => s.destroyed || s.readableEnded).length >= 6, 'the refused programs closed');
    await new Promise((r) => setTimeout(r, 50));
    expect(guest.device.backend.connectionCount).to.be.at.most(4);
    for (const s of sockets) s.destroy();
  });

  it('closes a host connection the guest never answers (timeout), and tells the guest with RST', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds, connectTimeoutMs: 50 });
    const host = await hostConnect(uds, 7001);
    expect(await host.reply).to.equal('closed');
    await guest.receive((p) => p.header.op === VIRTIO_VSOCK_OP_RST && p.header.dstPort === 7001, 'RST after timeout');
  });

  it('closes a host connection with a malformed CONNECT line, or none in time', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds, connectTimeoutMs: 50 });
    const socket = net.connect(uds);
    socket.write('CONNECT banana\n');
    await new Promise((r) => socket.once('close', r));
    const silent = net.connect(uds);
    await new Promise((r) => silent.once('close', r));
  });

  it('shutdown from the guest ends the host socket; the host sees EOF, and the guest gets its RST', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    let ended = false;
    let hostSide: net.Socket | undefined;
    const got: Buffer[] = [];
    await hostListen(6002, (sock) => {
      hostSide = sock;
      sock.on('data', (d: Buffer) => got.push(d));
      sock.on('end', () => {
        ended = true;
      });
    });
    const s = new GuestStream(guest, 40002, 6002);
    await s.connect();
    await s.write(Buffer.from('last words'));
    s.shutdown(VIRTIO_VSOCK_SHUTDOWN_SEND | VIRTIO_VSOCK_SHUTDOWN_RCV);
    await until(() => ended, 'EOF at the host');
    expect(Buffer.concat(got).toString()).to.equal('last words');
    await until(() => {
      s.pump();
      return s.reset;
    }, 'RST to the guest');
    expect(guest.device.backend.connectionCount).to.equal(0);
    // The host program keeps its end open (half-open socket): the device still lets go of its own.
    const closed = new Promise<void>((resolve) => hostSide!.once('close', () => resolve()));
    hostSide!.write('too late');
    await closed;
  });

  it('EOF from the host reaches the guest as SHUTDOWN(SEND) after the data; the guest can still send', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    const host = await hostConnect(uds, 5001);
    const s = await GuestStream.accept(guest, 5001);
    await host.reply;
    host.socket.end('bye');
    await until(() => {
      s.pump();
      return s.shutdownFromHost;
    }, 'SHUTDOWN');
    expect(Buffer.concat(s.received).toString()).to.equal('bye');
    expect(s.shutdownFromHost).to.equal(VIRTIO_VSOCK_SHUTDOWN_SEND);
    await s.write(Buffer.from('still here'));
    await until(() => Buffer.concat(host.data).toString() === 'still here', 'half-open data at the host');
  });

  it('RST from the guest closes the host socket at once', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    const host = await hostConnect(uds, 5002);
    const s = await GuestStream.accept(guest, 5002);
    await host.reply;
    const closed = new Promise((r) => host.socket.once('close', r));
    s.rst();
    await closed;
    await until(() => guest.device.backend.connectionCount === 0, 'connection gone');
  });

  it('RST to the guest when the host socket fails', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    let hostSide: net.Socket | undefined;
    await hostListen(6003, (sock) => {
      hostSide = sock;
    });
    const s = new GuestStream(guest, 40003, 6003);
    await s.connect();
    await until(() => hostSide, 'host side');
    hostSide!.destroy(); // EOF; our next write fails with EPIPE
    await until(() => {
      s.pump();
      return s.shutdownFromHost;
    }, 'SHUTDOWN');
    await s.write(randomBytes(1000)).catch(() => {});
    await until(() => {
      s.pump();
      return s.reset;
    }, 'RST after EPIPE');
  });

  it('sends the host no more than the guest has credit for, asks for credit, and resumes on CREDIT_UPDATE', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    const host = await hostConnect(uds, 5003);
    const s = await GuestStream.accept(guest, 5003, 8192);
    await host.reply;
    const data = randomBytes(64 * 1024);
    host.socket.write(data);
    const creditRequest = await guest.receive((p) => p.header.op === VIRTIO_VSOCK_OP_CREDIT_REQUEST, 'CREDIT_REQUEST');
    expect(creditRequest.header.dstPort).to.equal(5003);
    s.pump(false); // received, not consumed: no credit given back
    await new Promise((r) => setTimeout(r, 50));
    s.pump(false);
    expect(s.receivedBytes).to.equal(8192);
    s.fwdCnt = 8192;
    s.creditUpdate();
    await until(() => {
      s.pump(false);
      return s.receivedBytes === 16384;
    }, 'the next window');
    s.fwdCnt = 16384;
    const all = await s.readExactly(data.length);
    expect(sha(all)).to.equal(sha(data));
  });

  it('resets a connection whose guest sends beyond the credit it was given', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds, bufAlloc: 4096 });
    await hostListen(6004, (sock) => sock.pause());
    const s = new GuestStream(guest, 40004, 6004);
    await s.connect();
    expect(s.peerBufAlloc).to.equal(4096);
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 40004, dstPort: 6004 }, new Uint8Array(5000));
    await until(() => {
      s.pump();
      return s.reset;
    }, 'RST');
  });

  it('a slow host reader bounds what the device buffers: the guest runs out of credit', async () => {
    const bufAlloc = 64 * 1024;
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds, bufAlloc });
    let hostSide: net.Socket | undefined;
    await hostListen(6005, (sock) => {
      hostSide = sock;
      sock.pause();
    });
    const s = new GuestStream(guest, 40005, 6005);
    await s.connect();
    await until(() => hostSide, 'host side');
    const sending = s.write(randomBytes(32 << 20), 64 * 1024);
    await new Promise((r) => setTimeout(r, 300));
    // The guest is stuck waiting for credit; the device holds at most buf_alloc unflushed bytes.
    expect(s.sent).to.be.lessThan(32 << 20);
    const connection = [...(guest.device.backend as unknown as { connections: Map<string, { socket: net.Socket }> }).connections.values()][0]!;
    expect(connection.socket.writableLength).to.be.at.most(bufAlloc);
    let read = 0;
    hostSide!.on('data', (d: Buffer) => {
      read += d.length;
    });
    hostSide!.resume();
    await sending;
    await until(() => read === 32 << 20, 'everything at the host');
  });

  it('a guest that stops taking rx buffers makes the device stop reading the host socket', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    const host = await hostConnect(uds, 5004);
    const s = await GuestStream.accept(guest, 5004);
    await host.reply;
    guest.refillRx = false;
    const data = randomBytes(16 << 20);
    host.socket.write(data);
    await new Promise((r) => setTimeout(r, 300));
    s.pump();
    const connection = [...(guest.device.backend as unknown as { connections: Map<string, { pendingBytes: number }> }).connections.values()][0]!;
    // 64 rx buffers of 4 KiB were taken; the device reads ahead at most 256 KiB plus one socket chunk.
    expect(s.receivedBytes).to.be.at.most(64 * 4096);
    expect(connection.pendingBytes).to.be.at.most(256 * 1024 + 64 * 1024);
    expect(host.socket.writableLength).to.be.greaterThan(0);
    guest.refillRx = true;
    guest.returnRxBuffers();
    const all = await s.readExactly(data.length);
    expect(sha(all)).to.equal(sha(data));
  });

  it('carries 16 connections at once in both directions without loss or reordering', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    const size = 512 * 1024;
    await hostListen(6100, (sock) => sock.pipe(sock)); // guest-initiated ones are echoed by the host
    const jobs = Array.from({ length: 16 }, async (_, i) => {
      const data = randomBytes(size);
      if (i % 2 === 0) {
        const host = await hostConnect(uds, 5100 + i);
        const s = await GuestStream.accept(guest, 5100 + i);
        await host.reply;
        host.socket.write(data);
        const got = await s.readExactly(size);
        await s.write(got);
        await until(() => Buffer.concat(host.data).length === size, `echo ${i}`);
        expect(sha(Buffer.concat(host.data))).to.equal(sha(data));
        host.socket.destroy();
      } else {
        const s = new GuestStream(guest, 41000 + i, 6100);
        expect(await s.connect()).to.equal(true);
        await s.write(data);
        expect(sha(await s.readExactly(size))).to.equal(sha(data));
      }
    });
    await Promise.all(jobs);
  });

  it('TRANSPORT_RESET: drops every connection and posts the event to the guest', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    const host = await hostConnect(uds, 5005);
    await GuestStream.accept(guest, 5005);
    await host.reply;
    const closed = new Promise((r) => host.socket.once('close', r));
    guest.device.transportReset();
    await closed;
    guest.poll();
    expect(guest.eventIds).to.deep.equal([0]);
    expect(guest.device.backend.connectionCount).to.equal(0);
  });

  it('ignores packets with a spoofed source CID and answers stray packets with RST', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 1, dstPort: 6006, srcCid: 99 });
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 2, dstPort: 6006 }, new Uint8Array(10));
    guest.send({ op: VIRTIO_VSOCK_OP_SHUTDOWN, srcPort: 3, dstPort: 6006, dstCid: 77 });
    guest.send({ op: VIRTIO_VSOCK_OP_RST, srcPort: 4, dstPort: 6006 });
    const rsts = [await guest.receive(), await guest.receive()];
    expect(rsts.map((p) => [p.header.op, p.header.dstPort])).to.deep.equal([
      [VIRTIO_VSOCK_OP_RST, 2],
      [VIRTIO_VSOCK_OP_RST, 3],
    ]);
    await new Promise((r) => setTimeout(r, 20));
    guest.poll();
    expect(guest.inbox).to.deep.equal([]);
  });

  it('survives random packets from a hostile guest: never breaks, never throws, keeps serving', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds, bufAlloc: 4096 });
    await hostListen(6200, (sock) => sock.pipe(sock));
    const packet = fc.record({
      op: fc.integer({ min: 0, max: 9 }),
      srcPort: fc.constantFrom(1, 2, 3),
      dstPort: fc.constantFrom(6200, 6201),
      srcCid: fc.constantFrom(CID, CID, 3),
      dstCid: fc.constantFrom(2, 2, 1, 2 ** 40),
      type: fc.constantFrom(1, 1, 2),
      flags: fc.integer({ min: 0, max: 7 }),
      bufAlloc: fc.constantFrom(0, 100, 65536, 0xffff_ffff),
      fwdCnt: fc.integer({ min: 0, max: 0xffff_ffff }),
      payload: fc.uint8Array({ maxLength: 6000 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(packet, { maxLength: 20 }), async (packets) => {
        for (const { payload, ...h } of packets) guest.send(h, payload);
        await new Promise((r) => setImmediate(r));
        guest.poll();
        guest.inbox.length = 0;
        expect(guest.errors).to.deep.equal([]);
        expect(guest.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET).to.equal(0);
      }),
      { numRuns: 60 },
    );
    // Still a working device afterwards.
    const s = new GuestStream(guest, 50000, 6200);
    expect(await s.connect()).to.equal(true);
    await s.write(Buffer.from('still alive'));
    expect(Buffer.from(await s.readExactly(11)).toString()).to.equal('still alive');
  });

  it('takes a tx ring the guest keeps refilling in passes of bounded work: timers run between them, no packet is lost', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds });
    const REFILLS = 10_000;
    const backend = guest.device.backend;
    const fromGuest = backend.fromGuest.bind(backend);
    let received = 0;
    let left = REFILLS;
    const head = 0; // a fresh guest's first packet goes out in descriptor 0
    // The guest's second vCPU: every packet the device takes is published again, the same RST each time.
    backend.fromGuest = (h, payload) => {
      fromGuest(h, payload);
      received++;
      if (left-- > 0) guest.tx.offer(head);
    };
    let receivedWhenTimerRan = -1;
    setTimeout(() => {
      receivedWhenTimerRan = received;
    }, 0);
    guest.send({ op: VIRTIO_VSOCK_OP_RST, srcPort: 40100, dstPort: 9100 });
    expect(received, 'packets taken within the kick').to.equal(PACKETS_PER_PASS);
    await until(() => received === REFILLS + 1, 'every packet', 10_000);
    expect(receivedWhenTimerRan, 'the timer ran before the guest stopped refilling').to.be.within(1, REFILLS);
    expect(guest.errors).to.deep.equal([]);
  });

  it('an rx buffer too small for a header is a broken queue: DEVICE_NEEDS_RESET', async () => {
    guest = await VsockGuest.start({ guestCid: CID, udsPath: uds }, 0);
    guest.rx.writeDesc(0, guest.driver.heap.alloc(16), 16, 2, 0);
    guest.rx.submit(0);
    guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 40007, dstPort: 6007 }); // refused: an RST is due
    await until(() => guest.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 'DEVICE_NEEDS_RESET');
    expect(guest.errors[0]!.message).to.match(/cannot hold a 44-byte header/);
  });
});
