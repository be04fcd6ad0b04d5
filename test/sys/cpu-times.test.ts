import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuTimes } from '../../src/sys/cpu-times.js';

describe('cpuTimes: CPU time from a /proc stat file', () => {
  it('reads utime, stime and guest_time in ms past a command name holding spaces and parentheses', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cpu-times-'));
    try {
      // Fields 3..52 of proc(5): utime (14) 250 ticks, stime (15) 40, guest_time (43) 120.
      const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
      fields[14 - 3] = '250';
      fields[15 - 3] = '40';
      fields[43 - 3] = '120';
      const path = join(dir, 'stat');
      writeFileSync(path, `4242 (a) b (c d) ${fields.join(' ')}\n`);
      expect(cpuTimes(path)).to.deep.equal({ user: 2500, system: 400, total: 2900, guest: 1200 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads this process, and throws for one that is gone', () => {
    const own = cpuTimes(`/proc/${process.pid}/stat`);
    expect(own.total).to.equal(own.user + own.system);
    expect(own.guest).to.be.at.least(0).and.at.most(own.user);
    expect(() => cpuTimes('/proc/0/stat')).to.throw(/ENOENT/);
  });
});
