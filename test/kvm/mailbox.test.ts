import { expect } from 'chai';
import { Worker } from 'node:worker_threads';
import { createAccessOrder, Mailbox, MailboxOp, MailboxServer, serveMailbox, type MailboxRequest } from '../../src/kvm/mailbox.js';

const mailboxModule = new URL('../../src/kvm/mailbox.js', import.meta.url).href;

/** Runs `body` (an async function of (client, ops, shared)) in a worker thread as the vCPU side; resolves with what it returns. */
function vcpuSide(mailbox: Mailbox, body: string, shared?: SharedArrayBuffer): Promise<unknown> {
  const worker = new Worker(
    `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.module).then(async ({ Mailbox, MailboxClient }) => {
      const client = new MailboxClient(new Mailbox(workerData.buffer, workerData.order));
      const ops = { PioRead: 0, PioWrite: 1, MmioRead: 2, MmioWrite: 3 };
      let result;
      try { result = await (${body})(client, ops, workerData.shared); } catch (e) { result = { error: e.message, name: e.constructor.name }; }
      client.close();
      parentPort.postMessage(result);
    });
  `,
    { eval: true, workerData: { module: mailboxModule, buffer: mailbox.buffer, order: mailbox.orderBuffer, shared } },
  );
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

describe('vCPU-to-device mailbox', () => {
  it('applies the writes of two vCPUs taking turns under a guest lock in the order the guest made them', async () => {
    // As the 8250 driver does: whichever vCPU holds the port lock writes the transmit register. The
    // lock lives in guest memory, where the VMM cannot see it; only the shared order can keep the turns.
    const order = createAccessOrder();
    const server = new MailboxServer(new Int32Array(order));
    const guest = new SharedArrayBuffer(8); // [lock, next value]
    const written: number[] = [];
    const device = (r: MailboxRequest) => {
      // Now and then the device thread is busy (as with a disk completion) while both vCPUs go on.
      if (written.length % 10 === 0) for (const start = Date.now(); Date.now() - start < 1; );
      written.push(new DataView(r.data.buffer, r.data.byteOffset).getUint32(0, true));
    };
    const vcpus = [new Mailbox(undefined, order), new Mailbox(undefined, order)];
    const served = vcpus.map((m) =>
      server.serve(m, device, () => {
        throw new Error('no posted write fails here');
      }),
    );
    const turns = 4_000;
    // Strict turns: vCPU i writes the values v with v % 2 === i.
    await Promise.all(
      vcpus.map((m, i) =>
        vcpuSide(
          m,
          `(client, ops, guest) => {
      const words = new Int32Array(guest);
      for (;;) {
        while (Atomics.compareExchange(words, 0, 0, 1) !== 0);
        const value = words[1];
        if (value === ${turns}) { Atomics.store(words, 0, 0); return; }
        if (value % 2 !== ${i}) { Atomics.store(words, 0, 0); continue; }
        client.access(ops.PioWrite, 0x3f8, 4, 1, new Uint8Array(new Uint32Array([value]).buffer));
        words[1] = value + 1;
        Atomics.store(words, 0, 0);
      }
    }`,
          guest,
        ),
      ),
    );
    await Promise.all(served);
    const outOfOrder = written.findIndex((v, i) => v !== i);
    expect(outOfOrder, `first write out of order at ${outOfOrder}`).to.equal(-1);
    expect(written).to.have.length(turns);
  });

  it('posts writes in order and answers a later read after all of them', async () => {
    const mailbox = new Mailbox();
    const written: number[] = [];
    const served = serveMailbox(
      mailbox,
      (r: MailboxRequest) => {
        if (r.op === MailboxOp.PioWrite) written.push(r.data[0]! | (r.data[1]! << 8));
        else new DataView(r.data.buffer, r.data.byteOffset).setUint32(0, written.length, true);
      },
      () => {
        throw new Error('no posted write fails here');
      },
    );
    const seen = await vcpuSide(
      mailbox,
      `(client, ops) => {
      for (let i = 0; i < 1000; i++) client.access(ops.PioWrite, 0x3f8, 2, 1, new Uint8Array([i & 0xff, i >> 8]));
      const answer = new Uint8Array(4);
      client.access(ops.PioRead, 0x3fd, 4, 1, answer);
      return new DataView(answer.buffer).getUint32(0, true);
    }`,
    );
    await served;
    expect(seen, 'the read saw every earlier write').to.equal(1000);
    expect(written).to.deep.equal(Array.from({ length: 1000 }, (_, i) => i));
  });

  it('carries string I/O and 64-bit MMIO addresses through synchronous calls', async () => {
    const mailbox = new Mailbox();
    const requests: { op: number; address: number; size: number; count: number; data: number[] }[] = [];
    const served = serveMailbox(
      mailbox,
      (r) => {
        requests.push({ op: r.op, address: r.address, size: r.size, count: r.count, data: [...r.data] });
        if (r.op === MailboxOp.MmioRead) r.data.fill(0xab);
      },
      () => undefined,
    );
    const read = await vcpuSide(
      mailbox,
      `(client, ops) => {
      client.access(ops.PioWrite, 0x1f0, 2, 3, new Uint8Array([1, 2, 3, 4, 5, 6]));
      const data = new Uint8Array(8);
      client.access(ops.MmioRead, 0xfd_0000_0010, 8, 1, data);
      return [...data];
    }`,
    );
    await served;
    expect(requests).to.deep.equal([
      { op: MailboxOp.PioWrite, address: 0x1f0, size: 2, count: 3, data: [1, 2, 3, 4, 5, 6] },
      { op: MailboxOp.MmioRead, address: 0xfd_0000_0010, size: 8, count: 1, data: [0, 0, 0, 0, 0, 0, 0, 0] },
    ]);
    expect(read).to.deep.equal([0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab]);
  });

  it('reports a device error on a posted write at the next access, and to the device thread at once', async () => {
    const mailbox = new Mailbox();
    let failures = 0;
    const handled: number[] = [];
    const served = serveMailbox(
      mailbox,
      (r) => {
        handled.push(r.data[0]!);
        if (r.data[0] === 2) throw new Error('UART divisor latch is read-only');
      },
      () => failures++,
    );
    const outcome = await vcpuSide(
      mailbox,
      `(client, ops) => {
      for (let i = 1; i <= 3; i++) client.access(ops.PioWrite, 0x3f8, 1, 1, new Uint8Array([i]));
      client.flush();
      client.access(ops.PioRead, 0x3f8, 1, 1, new Uint8Array(1));
      return 'no error';
    }`,
    );
    await served;
    expect(outcome).to.deep.equal({ error: 'UART divisor latch is read-only', name: 'MailboxError' });
    expect(handled, 'a failed device receives nothing more').to.deep.equal([1, 2]);
    expect(failures).to.equal(1);
  });

  it('returns a device error on a call to the caller', async () => {
    const mailbox = new Mailbox();
    const served = serveMailbox(
      mailbox,
      () => {
        throw new Error('no such register 0x44');
      },
      () => undefined,
    );
    const outcome = await vcpuSide(mailbox, `(client, ops) => client.access(ops.MmioRead, 0x1000, 4, 1, new Uint8Array(4))`);
    await served;
    expect(outcome).to.deep.equal({ error: 'no such register 0x44', name: 'MailboxError' });
  });
});
