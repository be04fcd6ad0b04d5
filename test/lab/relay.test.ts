import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliEntry } from '../../src/sys/project-paths.js';

describe('lab: ts-vmm lab relays a command run in the lab @lab', function () {
  this.timeout(300_000);
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'relay-test-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('carries -i paths in at the same place, starts in the same directory, relays stdout, stderr and the exit status', () => {
    writeFileSync(join(dir, 'input.txt'), 'carried\n');
    const cli = cliEntry();
    const run = spawnSync(process.execPath, [cli, 'lab', '--exec', '-i', dir, '--', 'sh', '-c', 'pwd; cat input.txt; echo to-stderr >&2; exit 7'], {
      cwd: dir,
    });
    expect(run.stdout.toString()).to.equal(`${dir}\ncarried\n`);
    expect(run.stderr.toString()).to.include('to-stderr\n');
    expect(run.status).to.equal(7);
  });
});
