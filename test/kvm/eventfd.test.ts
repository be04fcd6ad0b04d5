import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { EventFd } from '../../src/sys/eventfd.js';
import { EventFdPoller } from '../../src/sys/eventfd-poller.js';

const nextSignal = (e: EventFd) =>
  new Promise<bigint>((resolve) =>
    e.listen((count) => {
      e.unlisten();
      resolve(count);
    }),
  );
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('EventFd', () => {
  it('counts signals and take() clears the counter', () => {
    const e = new EventFd();
    expect(e.take()).to.equal(0n);
    e.signal();
    e.signal();
    expect(e.take()).to.equal(2n);
    expect(e.take()).to.equal(0n);
    e.close();
  });

  it('delivers a signal from another thread of control to a main-thread listener', async () => {
    const e = new EventFd();
    const got = nextSignal(e);
    setTimeout(() => e.signal(), 10);
    expect(await got).to.equal(1n);
    e.close();
  });

  it('coalesces signals made before the listener ran, and keeps delivering later ones', async () => {
    const e = new EventFd();
    const counts: bigint[] = [];
    const total = () => counts.reduce((a, b) => a + b, 0n);
    e.listen((n) => counts.push(n));
    e.signal();
    e.signal();
    e.signal();
    while (total() < 3n) await sleep(5);
    const deliveries = counts.length;
    e.signal();
    while (total() < 4n) await sleep(5);
    expect(deliveries, 'three signals in a row arrive in at most three calls').to.be.within(1, 3);
    expect(counts.length, 'a later signal is a call of its own').to.equal(deliveries + 1);
    expect(counts.at(-1)).to.equal(1n);
    e.close();
  });

  it('stops delivering after unlisten, leaving the counter to take()', async () => {
    const e = new EventFd();
    let calls = 0;
    e.listen(() => calls++);
    e.unlisten();
    e.signal();
    await sleep(30);
    expect(calls).to.equal(0);
    expect(e.take()).to.equal(1n);
    e.close();
  });

  it('refuses a second listener', () => {
    const e = new EventFd();
    e.listen(() => undefined);
    expect(() => e.listen(() => undefined)).to.throw(/already has a listener/);
    e.close();
  });

  it('holds a wait only while an fd is watched, so a process that stopped listening ends by itself', async () => {
    const poller = new EventFdPoller();
    const e = new EventFd();
    expect(poller.pending).to.equal(false);
    const got = new Promise<void>((resolve) => poller.watch(e.fd, () => resolve()));
    expect(poller.pending).to.equal(true);
    e.signal();
    await got;
    poller.unwatch(e.fd);
    while (poller.pending) await sleep(5);
    await poller.close();
    e.close();
    // The same through EventFd.listen, in a process of its own, which must exit with nothing left to do.
    const script = `import { EventFd } from ${JSON.stringify(new URL('../../src/sys/eventfd.js', import.meta.url).href)};
      const e = new EventFd();
      e.listen(() => { e.close(); console.log('signalled'); });
      setTimeout(() => e.signal(), 10);`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000 });
    expect(child.signal, 'the process did not end by itself').to.equal(null);
    expect([child.status, child.stdout]).to.deep.equal([0, 'signalled\n']);
  });

  it('runs a poller of its own that reports ready fds and shuts down cleanly', async () => {
    const poller = new EventFdPoller();
    const [a, b] = [new EventFd(), new EventFd()];
    const ready: number[] = [];
    const both = new Promise<void>((resolve) => {
      const note = (fd: number) => {
        ready.push(fd);
        if (ready.length === 2) resolve();
      };
      poller.watch(a.fd, note);
      poller.watch(b.fd, note);
    });
    expect(() => poller.watch(a.fd, () => undefined)).to.throw(/already watched/);
    b.signal();
    a.signal();
    await both;
    expect(ready.sort()).to.deep.equal([a.fd, b.fd].sort());
    poller.unwatch(a.fd);
    poller.unwatch(b.fd);
    await poller.close();
    a.close();
    b.close();
  });
});
