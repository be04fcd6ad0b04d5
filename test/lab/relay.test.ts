import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

  it('gives up a lab that prints nothing with its QEMU idle after --idle-stall, with the status of a failure', () => {
    // An idle command looks like a stalled lab (docs/LAB.md), which is why the watch is asked for.
    const started = Date.now();
    const run = spawnSync(process.execPath, [cliEntry(), 'lab', '--idle-stall', '20', '--exec', '--', 'sh', '-c', 'echo up; sleep 600'], { cwd: dir });
    expect(run.stdout.toString()).to.equal('up\n');
    expect(run.stderr.toString()).to.match(/^ts-vmm: lab guest stalled: no output and QEMU idle for 20 s while running command 0 /m);
    expect(run.stderr.toString()).to.not.match(/^\s+at /m);
    expect(run.status).to.equal(125);
    expect(Date.now() - started, 'given up long before the sleep ended').to.be.below(280_000);
  });

  it('takes its QEMU along when it is ended by SIGTERM, which skips exit handlers', async () => {
    const lab = spawn(process.execPath, [cliEntry(), 'lab', '--exec', '--', 'sh', '-c', 'echo up; sleep 600'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const ended = new Promise<NodeJS.Signals | null>((resolve) => lab.on('close', (_code, signal) => resolve(signal)));
    await new Promise<void>((resolve) => lab.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('up') && resolve()));
    // The lab's QEMU is a child of ts-vmm lab (/proc/PID/task/PID/children lists it).
    const children = readFileSync(`/proc/${lab.pid}/task/${lab.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    const qemu = children.find((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]!.endsWith('qemu-system-x86_64'));
    expect(qemu, `a QEMU among the children ${children.join(' ')}`).to.be.a('string');
    lab.kill('SIGTERM');
    expect(await ended).to.equal('SIGTERM');
    // SIGKILLed, QEMU is gone once reaped: no /proc entry, or a zombie's until init reaps it.
    const state = (): string => {
      try {
        return readFileSync(`/proc/${qemu}/stat`, 'utf8').split(') ')[1]![0]!;
      } catch {
        return 'gone';
      }
    };
    for (let i = 0; i < 50 && !['gone', 'Z'].includes(state()); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(state(), 'QEMU outlived ts-vmm lab').to.be.oneOf(['gone', 'Z']);
  });
});
