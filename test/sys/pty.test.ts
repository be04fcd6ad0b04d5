// The host pty of `create --console-socket` relays a guest terminal that already did the line discipline.
import { expect } from 'chai';
import { closeSync, readSync, writeSync } from 'node:fs';
import { openPty } from '../../src/sys/pty.js';

describe('host pty pair', () => {
  it('passes bytes through unchanged both ways (raw: no CR added, no echo, no CR to NL)', () => {
    const pty = openPty();
    try {
      const buffer = Buffer.alloc(64);
      writeSync(pty.slave, 'out\n');
      expect(buffer.subarray(0, readSync(pty.master, buffer)).toString()).to.equal('out\n');
      writeSync(pty.master, 'in\r');
      expect(buffer.subarray(0, readSync(pty.slave, buffer)).toString()).to.equal('in\r');
    } finally {
      closeSync(pty.slave);
      closeSync(pty.master);
    }
  });
});
