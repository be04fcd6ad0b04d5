// The progress line of long work (ts-vmm mkcw): its wording, and that it appears on a terminal only. The
// terminal case runs the real command under script(1), which gives it a pseudo-terminal.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { formatProgress, terminalProgress } from '../../src/cli/progress.js';
import { projectFile } from '../../src/sys/project-paths.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;

/** A writable stream that keeps what it is given, as a terminal (isTTY) or not. */
function capture(isTTY: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += chunk.toString();
      done();
    },
  }) as unknown as NodeJS.WriteStream;
  stream.isTTY = isTTY;
  return { stream, text: () => text };
}

describe('cli: progress of long work', () => {
  it('formats percent, time left at the rate so far, MiB done and the rate', () => {
    expect(formatProgress(64 * MiB, 256 * MiB, 2)).to.equal('Progress:  25.0%, ETA 00:06, 64 MiB written, speed 32.0 MiB/s');
    expect(formatProgress(256 * MiB, 256 * MiB, 4)).to.equal('Progress: 100.0%, ETA 00:00, 256 MiB written, speed 64.0 MiB/s');
    expect(formatProgress(MiB, 8192 * MiB, 1)).to.equal('Progress:   0.0%, ETA 2:16:31, 1 MiB written, speed 1.0 MiB/s');
    expect(formatProgress(0, 256 * MiB, 0)).to.equal('Progress:   0.0%, ETA --:--, 0 MiB written, speed 0.0 MiB/s');
  });

  it('draws nothing when the stream is not a terminal', () => {
    expect(terminalProgress(capture(false).stream)).to.equal(undefined);
  });

  it('on a terminal, redraws the line in place at most every 250 ms and ends it with the last state', () => {
    const { stream, text } = capture(true);
    let ms = 0;
    const progress = terminalProgress(stream, () => ms)!;
    ms = 1000;
    progress.update(10 * MiB, 40 * MiB);
    ms = 1100;
    progress.update(20 * MiB, 40 * MiB); // within 250 ms of the last redraw: not drawn yet
    ms = 2000;
    progress.finish();
    expect(text()).to.equal('\rProgress:  25.0%, ETA 00:03, 10 MiB written, speed 10.0 MiB/s\rProgress:  50.0%, ETA 00:02, 20 MiB written, speed 10.0 MiB/s\n');
  });

  it('ts-vmm mkcw on a terminal shows it, ending at 100%', async function () {
    this.timeout(120_000);
    const dir = mkdtempSync(join(tmpdir(), 'ts-vmm-progress-'));
    try {
      const bundle = join(dir, 'bundle');
      mkdirSync(join(bundle, 'rootfs'), { recursive: true });
      cpSync(projectFile('examples', 'hello', 'config.json'), join(bundle, 'config.json'));
      writeFileSync(join(bundle, 'rootfs', 'file'), randomBytes(MiB));
      const command = [process.execPath, projectFile('bin', 'ts-vmm.js'), 'mkcw', bundle, join(dir, 'image'), '--passphrase-file', join(dir, 'pass')];
      const quoted = [...command, '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'].map((word) => `'${word}'`).join(' ');
      const { stdout } = await exec('script', ['-qfec', quoted, '/dev/null'], { cwd: dir });
      expect(stdout).to.match(/\rProgress: 100\.0%, ETA 00:00, \d+ MiB written, speed [\d.]+ MiB\/s\r?\n/);
      expect(stdout).to.match(/workload-id [0-9a-f]{64}/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
