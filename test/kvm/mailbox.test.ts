import { expect } from 'chai';
import { Worker } from 'node:worker_threads';
import { Mailbox, MailboxOp, serveMailbox, type MailboxRequest } from '../../src/kvm/mailbox.js';

const mailboxModule = new URL('../../src/kvm/mailbox.js', import.meta.url).href;

/** Runs `body` (an async function of (client, ops)) in a worker thread as the vCPU side; resolves with what it returns. */
function vcpuSide(mailbox: Mailbox, body: string): Promise<unknown> {
  const worker = new Worker(`
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.module).then(async ({ Mailbox, MailboxClient }) => {
      const client = new MailboxClient(new Mailbox(workerData.buffer));
      const ops = { PioRead: 0, PioWrite: 1, MmioRead: 2, MmioWrite: 3 };
      let result;
      try { result = await (${body})(client, ops); } catch (e) { result = { error: e.message, name: e.constructor.name }; }
      client.close();
      parentPort.postMessage(result);
    });
  `, { eval: true, workerData: { module: mailboxModule, buffer: mailbox.buffer } });
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

describe('vCPU-to-device mailbox', () => {
  it('posts writes in order and answers a later read after all of them', async () => {
    const mailbox = new Mailbox();
    const written: number[] = [];
    const served = serveMailbox(mailbox, (r: MailboxRequest) => {
      if (r.op === MailboxOp.PioWrite) written.push(r.data[0]! | (r.data[1]! << 8));
      else new DataView(r.data.buffer, r.data.byteOffset).setUint32(0, written.length, true);
    }, () => { throw new Error('no posted write fails here'); });
    const seen = await vcpuSide(mailbox, `(client, ops) => {
      for (let i = 0; i < 1000; i++) client.access(ops.PioWrite, 0x3f8, 2, 1, new Uint8Array([i & 0xff, i >> 8]));
      const answer = new Uint8Array(4);
      client.access(ops.PioRead, 0x3fd, 4, 1, answer);
      return new DataView(answer.buffer).getUint32(0, true);
    }`);
    await served;
    expect(seen, 'the read saw every earlier write').to.equal(1000);
    expect(written).to.deep.equal(Array.from({ length: 1000 }, (_, i) => i));
  });

  it('carries string I/O and 64-bit MMIO addresses through synchronous calls', async () => {
    const mailbox = new Mailbox();
    const requests: { op: number; address: number; size: number; count: number; data: number[] }[] = [];
    const served = serveMailbox(mailbox, (r) => {
      requests.push({ op: r.op, address: r.address, size: r.size, count: r.count, data: [...r.data] });
      if (r.op === MailboxOp.MmioRead) r.data.fill(0xab);
    }, () => undefined);
    const read = await vcpuSide(mailbox, `(client, ops) => {
      client.access(ops.PioWrite, 0x1f0, 2, 3, new Uint8Array([1, 2, 3, 4, 5, 6]));
      const data = new Uint8Array(8);
      client.access(ops.MmioRead, 0xfd_0000_0010, 8, 1, data);
      return [...data];
    }`);
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
    const served = serveMailbox(mailbox, (r) => {
      handled.push(r.data[0]!);
      if (r.data[0] === 2) throw new Error('UART divisor latch is read-only');
    }, () => failures++);
    const outcome = await vcpuSide(mailbox, `(client, ops) => {
      for (let i = 1; i <= 3; i++) client.access(ops.PioWrite, 0x3f8, 1, 1, new Uint8Array([i]));
      client.flush();
      client.access(ops.PioRead, 0x3f8, 1, 1, new Uint8Array(1));
      return 'no error';
    }`);
    await served;
    expect(outcome).to.deep.equal({ error: 'UART divisor latch is read-only', name: 'MailboxError' });
    expect(handled, 'a failed device receives nothing more').to.deep.equal([1, 2]);
    expect(failures).to.equal(1);
  });

  it('returns a device error on a call to the caller', async () => {
    const mailbox = new Mailbox();
    const served = serveMailbox(mailbox, () => { throw new Error('no such register 0x44'); }, () => undefined);
    const outcome = await vcpuSide(mailbox, `(client, ops) => client.access(ops.MmioRead, 0x1000, 4, 1, new Uint8Array(4))`);
    await served;
    expect(outcome).to.deep.equal({ error: 'no such register 0x44', name: 'MailboxError' });
  });
});
