// On a host without a usable /dev/kvm (or with TS_VMM_LAB=force), boots two labs side by side (each
// emulates one CPU, so two use both of a CI machine's cores) and runs there the lab's self-test and every
// test file whose describe titles carry the KVM tag, split between the two, failing if any inner test
// fails. Where /dev/kvm works, those tests run directly and this suite is skipped.
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { labNeeded } from '../../src/kvm/probe.js';
import { AGENT_ENV, ensureGuestAgent } from '../../src/oci/guest-agent.js';
import { runCacheDir } from '../../src/oci/paths.js';
import { LAB_PATHS } from '../../src/lab/image.js';
import { LabError, runInLab, type LabCommand, type LabResult } from '../../src/lab/run.js';
import { projectRoot } from '../../src/sys/project-paths.js';

const KVM_TAG = '@' + 'kvm'; // spelled apart so that this file's titles never match the inner grep
const SUITE = 7; // index of the inner mocha run among the first lab's commands
const LAB_TIMEOUT_MS = 40 * 60 * 1000; // a healthy lab takes about 20 minutes; CI allows 90 for everything
const INNER_TEST_TIMEOUT_MS = 300_000;
// The inner report prints a line per test; a test retried twice can stay silent for three of its timeouts.
const INNER_SILENCE_MS = 3 * INNER_TEST_TIMEOUT_MS + 60_000;
const STUCK_SILENCE_MS = 3000;
// Inner tests keep the lab's CPU busy: this long with QEMU idle and silent is a lab CPU halted for good.
const IDLE_STALL_MS = 120_000;
// Boots of one lab: a stall is QEMU's (docs/LAB.md) and costs a boot; a third stall fails the suite.
const LAB_ATTEMPTS = 3;
// TS_VMM_LAB_GREP narrows the inner run to the KVM-tagged tests whose titles also match it (a regular expression).
// Then one lab runs them all.
const NARROWED = process.env.TS_VMM_LAB_GREP !== undefined && process.env.TS_VMM_LAB_GREP !== '';
const INNER_GREP = NARROWED ? `^(?=.*${KVM_TAG})(?=.*(?:${process.env.TS_VMM_LAB_GREP}))` : KVM_TAG;
// Test files (relative to the project) that go to the second lab: about half of the inner run's time.
const SECOND_LAB = /^dist\/test\/(sev|virtio)\/|confidential|engines/;
// A lab that runs these carries the container engines.
const ENGINE_TESTS = /engines[^/]*\.test\.js$/;

const KVM_SUITE = new RegExp(`describe\\([^\\n]*${KVM_TAG}`);

/** The compiled test files with a KVM-tagged suite, split between the two labs (one list when narrowed). */
function innerTestFiles(): string[][] {
  const files: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.test.js') && KVM_SUITE.test(readFileSync(path, 'utf8'))) files.push(relative(projectRoot(), path));
    }
  };
  walk(join(projectRoot(), 'dist', 'test'));
  files.sort();
  if (NARROWED) return [files];
  return [files.filter((f) => !SECOND_LAB.test(f)), files.filter((f) => SECOND_LAB.test(f))];
}

/** Bytes that a tty or a text channel would mangle: NUL, CR, LF, CRLF, high bytes, invalid UTF-8. */
const awkwardBytes = Buffer.from([0, 1, 13, 10, 13, 13, 10, 0xff, 0xfe, 0xc3, 0x28, 0x40, 0x40, 0x6c, 0x61, 0x62, 0x20, 10]);
const bulkExpression = "createHash('sha512').update('lab').digest('hex').repeat(2000)"; // 256 KB
const bulk = createHash('sha512').update('lab').digest('hex').repeat(2000);
const carried = Buffer.from(Array.from({ length: 4099 }, (_, i) => (i * 7919) & 0xff));

const probeScript = `import { probeKvm } from '${LAB_PATHS.project}/dist/src/kvm/probe.js';
process.stdout.write(JSON.stringify(probeKvm()));`;
/** Nested guests' code finds the stock kernel, its virtio/ext4 modules and busybox offline. */
const offlineAssetsScript = `import { ensureDebianKernel, ensureBusybox } from '${LAB_PATHS.project}/dist/src/assets/debian.js';
import { ModuleTree } from '${LAB_PATHS.project}/dist/src/initramfs/modules.js';
const kernel = await ensureDebianKernel({ log: () => { throw new Error('the lab cache should need no download'); } });
const order = await (await ModuleTree.open(kernel.modulesDir)).loadOrder(['virtio_blk', 'virtio_mmio', 'vmw_vsock_virtio_transport', 'ext4']);
const busybox = await ensureBusybox();
process.stdout.write(JSON.stringify({ release: kernel.release, modules: order.map((m) => m.name).sort(), busybox: busybox.path }));`;
const toolsScript = 'mke2fs -V && mkfs.ext4 -V && e2fsck -V && debugfs -V && socat -V && cpio --version && xz --version';

const exactScript = `const { createHash } = require('node:crypto');
process.stdout.write(Buffer.from('${awkwardBytes.toString('base64')}', 'base64'));
process.stderr.write(${bulkExpression});
process.exitCode = 42;`;

/** Marks each line of a stream with a prefix, holding a partial line (or character) until its end arrives. */
class LinePrefixer {
  private partial = '';
  private readonly decoder = new StringDecoder('utf8');
  constructor(private readonly prefix: string) {}
  lines(data: Buffer): string {
    const pieces = (this.partial + this.decoder.write(data)).split('\n');
    this.partial = pieces.pop() ?? '';
    return pieces.map((line) => `${this.prefix}${line}\n`).join('');
  }
}

describe('lab: KVM-tagged tests inside qemu (TCG, nested SVM) @lab', function () {
  this.timeout(LAB_ATTEMPTS * LAB_TIMEOUT_MS);
  let lab: LabResult; // the first lab: the self-test's commands, then its share of the inner run
  let second: LabResult | undefined;

  before(async function () {
    if (!labNeeded()) this.skip();
    // The lab has no compiler: inner tests that run workloads use this host's build of the guest agent.
    const agent = await ensureGuestAgent(runCacheDir());
    const [firstFiles = [], secondFiles] = innerTestFiles();
    [lab, second] = await Promise.all([
      runOnce(agent, [...selfTestCommands, innerRun(firstFiles)], 'lab 1'),
      secondFiles === undefined ? undefined : runOnce(agent, [innerRun(secondFiles)], 'lab 2'),
    ]);
  });

  /** A lab that stalls (its emulated CPU halted with an interrupt it never takes: docs/LAB.md) is booted
   * again, up to LAB_ATTEMPTS in all; a timeout or any failing test fails the suite at once. */
  async function runOnce(agent: string, commands: LabCommand[], name: string): Promise<LabResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await runSuiteLab(agent, commands, name);
        process.stdout.write(`      --- ${name}: boot to first command ${result.timings.bootMs} ms, lab total ${result.timings.totalMs} ms ---\n`);
        return result;
      } catch (e) {
        const message = e instanceof Error ? e.message : String(e);
        if (!(e instanceof LabError && e.stalled) || attempt === LAB_ATTEMPTS) throw new Error(`${name}: ${message}`);
        process.stdout.write(`      --- ${name} stalled; booting it once more. What it showed: ---\n${message}\n`);
      }
    }
  }

  function runSuiteLab(agent: string, commands: LabCommand[], name: string): Promise<LabResult> {
    const inner = commands.length - 1;
    const report = new LinePrefixer(`${name} | `);
    return runInLab({
      // The inner reports stream as they come, each line marked with its lab, so a slow or stuck inner
      // test shows where it is.
      onOutput: (index, stream, data) => {
        if (index === inner) (stream === 'stdout' ? process.stdout : process.stderr).write(report.lines(data));
      },
      timeoutMs: LAB_TIMEOUT_MS - 60_000,
      // Longer than the agent's own watchdog on the inner run, which reports a stuck test itself.
      silenceTimeoutMs: INNER_SILENCE_MS + 120_000,
      idleStallMs: IDLE_STALL_MS,
      files: [
        { guestPath: '/lab/carried.bin', content: carried, mode: 0o751 },
        { guestPath: agent, hostPath: agent },
        // Named again at its own path, as callers carrying a program with its libraries do: carried once.
        { guestPath: join(realpathSync(dirname(process.execPath)), basename(process.execPath)), hostPath: process.execPath },
      ],
      env: { [AGENT_ENV]: agent },
      engines: commands.some((c) => 'argv' in c && c.argv.some((a) => ENGINE_TESTS.test(a))),
      commands,
    });
  }

  const selfTestCommands: LabCommand[] = [
    { argv: ['node', '--input-type=module', '-e', probeScript] },
    { argv: ['node', '-e', exactScript] },
    { script: 'stat -c "%a %s" /lab/carried.bin && sha256sum /lab/carried.bin' },
    { script: 'kill -KILL $$' },
    { argv: ['node', '--input-type=module', '-e', offlineAssetsScript] },
    { script: toolsScript },
    { script: 'echo waiting; sleep 600 & wait', idleTimeoutMs: STUCK_SILENCE_MS },
  ];

  function innerRun(files: readonly string[]): LabCommand {
    return {
      argv: [
        'node',
        'node_modules/mocha/bin/mocha.js',
        '--require',
        'dist/test/lab/failures-at-once.js',
        '--grep',
        INNER_GREP,
        '--timeout',
        String(INNER_TEST_TIMEOUT_MS),
        '--reporter',
        'spec',
        ...files,
      ],
      idleTimeoutMs: INNER_SILENCE_MS,
    };
  }

  it('gives the guest a working /dev/kvm (KVM_GET_API_VERSION is 12)', () => {
    const probe = lab.commands[0];
    expect(probe?.exitStatus, probe?.stderr.toString()).to.equal(0);
    expect(JSON.parse(probe?.stdout.toString() ?? '')).to.deep.equal({ available: true, apiVersion: 12 });
  });

  it("returns a command's stdout, stderr and exit status exactly", () => {
    const exact = lab.commands[1];
    expect(exact?.exitStatus).to.equal(42);
    expect(exact?.signal).to.equal(null);
    expect(exact?.stdout.equals(awkwardBytes)).to.equal(true);
    expect(exact?.stderr.toString()).to.equal(bulk);
  });

  it('carries files in with their content and mode (the kernel unpacked our cpio), and a file it carries anyway once', () => {
    const stat = lab.commands[2];
    const sha = createHash('sha256').update(carried).digest('hex');
    expect(stat?.stdout.toString()).to.equal(`751 ${carried.length}\n${sha}  /lab/carried.bin\n`);
  });

  it('reports a command killed by a signal, and the first failure as the overall status', () => {
    expect(lab.commands[3]).to.include({ exitStatus: null, signal: 'SIGKILL' });
    expect(lab.exitStatus).to.equal(42);
  });

  it('carries an offline asset cache: kernel, nested-guest modules (with modules.dep) and busybox', () => {
    const assets = lab.commands[4];
    expect(assets?.exitStatus, assets?.stderr.toString()).to.equal(0);
    const found = JSON.parse(assets?.stdout.toString() ?? '') as { release: string; modules: string[]; busybox: string };
    expect(found.release).to.match(/-amd64$/);
    expect(found.modules).to.include.members([
      'virtio',
      'virtio_ring',
      'virtio_blk',
      'virtio_mmio',
      'vsock',
      'vmw_vsock_virtio_transport_common',
      'vmw_vsock_virtio_transport',
      'ext4',
      'jbd2',
    ]);
    expect(found.busybox).to.equal(`${LAB_PATHS.cache}/unpacked/busybox-static/bin/busybox`);
  });

  it('carries the tools tests call, with their shared libraries', () => {
    const tools = lab.commands[5];
    expect(tools?.exitStatus, tools?.stderr.toString()).to.equal(0);
  });

  it('diagnoses a command that falls silent (every process, its state and kernel stacks) and kills it with its children', () => {
    const stuck = lab.commands[6];
    expect(stuck).to.include({ exitStatus: null, signal: 'SIGKILL' });
    expect(stuck?.stdout.toString()).to.equal('waiting\n');
    const report = stuck?.stderr.toString() ?? '';
    expect(report).to.contain(`lab: no output for ${STUCK_SILENCE_MS} ms; killing the command`);
    expect(report).to.match(/^lab: pid \d+ S \(sleeping\) wchan=\S+ sleep 600$/m);
    expect(report).to.match(/^lab: {5}\[<0>\] .+$/m, 'kernel stacks');
  });

  it('passes every KVM-tagged test inside the labs', () => {
    for (const [name, suite] of [
      ['lab 1', lab.commands[SUITE]],
      ['lab 2', second?.commands[0]],
    ] as const) {
      if (name === 'lab 2' && second === undefined) continue;
      expect(suite?.exitStatus, `inner mocha of ${name} failed: see its report above`).to.equal(0);
      expect(suite?.stdout.toString()).to.match(/\d+ passing/);
    }
  });
});
