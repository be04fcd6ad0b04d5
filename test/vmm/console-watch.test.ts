import { expect } from 'chai';
import { ConsoleWatch } from '../../src/vmm/console-watch.js';

describe('console watch', () => {
  it('takes the panic reason from the banner line, across chunk boundaries and CRLF', () => {
    const watch = new ConsoleWatch();
    watch.feed(Buffer.from('[    1.0] Run /init as init process\r\n[    1.2] Kernel pa'));
    expect(watch.panic).to.equal(undefined);
    watch.feed(Buffer.from('nic - not syncing: Attempted to kill init! exitcode=0x00000300\r\n'));
    expect(watch.panic).to.equal('Attempted to kill init! exitcode=0x00000300');
  });

  it('sees a banner still waiting for its newline', () => {
    const watch = new ConsoleWatch();
    watch.feed(Buffer.from('Kernel panic - not syncing: VFS: Unable to mount root fs'));
    expect(watch.panic).to.equal('VFS: Unable to mount root fs');
  });

  it('reports the end of a panic once, with the first reason, and ignores ordinary lines', () => {
    const ends: string[] = [];
    const watch = new ConsoleWatch((reason) => ends.push(reason));
    watch.feed(Buffer.from('a line about panic handling\nKernel panic - not syncing: first\nKernel panic - not syncing: second\n'));
    watch.feed(Buffer.from('---[ end Kernel panic - not syncing: first ]---\n'));
    expect(ends).to.deep.equal(['first']);
    expect(watch.panic).to.equal('first');
  });

  it('does not report an end without a panic', () => {
    const ends: string[] = [];
    const watch = new ConsoleWatch((reason) => ends.push(reason));
    watch.feed(Buffer.from('---[ end Kernel panic - not syncing: quoted ]---\n'));
    expect(ends).to.deep.equal([]);
    expect(watch.panic).to.equal(undefined);
  });
});
