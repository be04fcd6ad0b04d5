import { expect } from 'chai';
import { LabError, runInLab } from '../../src/lab/run.js';

const quiet = (): void => {};

async function labError(promise: Promise<unknown>): Promise<LabError> {
  try {
    await promise;
  } catch (e) {
    expect(e).to.be.instanceOf(LabError);
    return e as LabError;
  }
  return expect.fail('expected the lab to fail');
}

describe('lab: failures are reported with their cause @lab', function () {
  this.timeout(300_000);

  it('names the missing qemu and its Debian package before building anything', async () => {
    const error = await labError(runInLab({ commands: [{ script: 'true' }], qemu: '/nonexistent/qemu-system-x86_64', log: quiet }));
    expect(error.message).to.match(/qemu-system-x86_64 not found: .*Debian package qemu-system-x86/);
  });

  it('refuses an empty plan', async () => {
    expect((await labError(runInLab({ commands: [], log: quiet }))).message).to.match(/at least one command/);
  });

  it('reports a guest that stops before finishing, with the tail of its console', async () => {
    const error = await labError(runInLab({ commands: [{ script: 'poweroff -f' }, { script: 'echo never' }], log: quiet }));
    expect(error.message).to.match(/stopped before finishing its commands/);
    expect(error.message).to.include('lab: starting agent');
  });

  it('stops a guest that runs past its time limit, naming the command and showing where each CPU was', async () => {
    // Long enough for the lab to boot and start the command (about 10 s here).
    const error = await labError(runInLab({ commands: [{ script: 'echo waiting; sleep 3600' }], timeoutMs: 90_000, log: quiet }));
    expect(error.message).to.match(
      /^lab guest timed out after 90 s while running command 0 \(\/bin\/sh -c echo waiting; sleep 3600\); its last output lines:\nwaiting\n/,
    );
    expect(error.message).to.include("last console lines (after an NMI asked for every CPU's backtrace)");
    expect(error.message).to.match(/Kernel panic - not syncing: NMI/);
    expect(error.message).to.match(/NMI backtrace for cpu 0/);
  });

  it('gives up a silent lab whose QEMU stays idle as stalled, while a silent but busy command goes on', async () => {
    const busyQuietly = 'end=$(($(date +%s) + 45)); while [ "$(date +%s)" -lt "$end" ]; do :; done';
    const error = await labError(
      runInLab({ commands: [{ script: busyQuietly }, { script: 'sleep 3600' }], idleStallMs: 30_000, timeoutMs: 280_000, log: quiet }),
    );
    expect(error.stalled, error.message).to.equal(true);
    expect(error.message).to.match(/^lab guest stalled: no output and QEMU idle for 30 s while running command 1 \(\/bin\/sh -c sleep 3600\)/);
  });
});
