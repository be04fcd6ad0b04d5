// On a host without a usable /dev/kvm (or with TS_VMM_LAB=force), boots the lab once and runs there
// both the lab's self-test and every test whose describe title carries the KVM tag, failing if any
// inner test fails. Where /dev/kvm works, those tests run directly and this suite is skipped.
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { probeKvm } from '../../src/lab/kvm-probe.js';
import { LAB_PATHS } from '../../src/lab/image.js';
import { runInLab, type LabResult } from '../../src/lab/run.js';

const KVM_TAG = '@' + 'kvm'; // spelled apart so that this file's titles never match the inner grep
const LAB_TIMEOUT_MS = 60 * 60 * 1000;
const INNER_TEST_TIMEOUT_MS = 300_000;

/** Bytes that a tty or a text channel would mangle: NUL, CR, LF, CRLF, high bytes, invalid UTF-8. */
const awkwardBytes = Buffer.from([0, 1, 13, 10, 13, 13, 10, 0xff, 0xfe, 0xc3, 0x28, 0x40, 0x40, 0x6c, 0x61, 0x62, 0x20, 10]);
const bulkExpression = "createHash('sha512').update('lab').digest('hex').repeat(2000)"; // 256 KB
const bulk = createHash('sha512').update('lab').digest('hex').repeat(2000);
const carried = Buffer.from(Array.from({ length: 4099 }, (_, i) => (i * 7919) & 0xff));

const probeScript = `import { probeKvm } from '${LAB_PATHS.project}/dist/src/lab/kvm-probe.js';
process.stdout.write(JSON.stringify(probeKvm()));`;
const exactScript = `const { createHash } = require('node:crypto');
process.stdout.write(Buffer.from('${awkwardBytes.toString('base64')}', 'base64'));
process.stderr.write(${bulkExpression});
process.exitCode = 42;`;

describe('lab: KVM-tagged tests inside qemu (TCG, nested SVM) @lab', function () {
  this.timeout(LAB_TIMEOUT_MS);
  let lab: LabResult;

  before(async function () {
    const host = probeKvm();
    if (process.env.TS_VMM_LAB !== 'force' && host.available) this.skip();
    lab = await runInLab({
      timeoutMs: LAB_TIMEOUT_MS - 60_000,
      files: [{ guestPath: '/lab/carried.bin', content: carried, mode: 0o751 }],
      commands: [
        { argv: ['node', '--input-type=module', '-e', probeScript] },
        { argv: ['node', '-e', exactScript] },
        { script: 'stat -c "%a %s" /lab/carried.bin && sha256sum /lab/carried.bin' },
        { script: 'kill -KILL $$' },
        { argv: ['node', 'node_modules/mocha/bin/mocha.js', '--grep', KVM_TAG, '--timeout', String(INNER_TEST_TIMEOUT_MS), '--reporter', 'spec'] },
      ],
    });
    const suite = lab.commands[4];
    process.stdout.write(`      --- inner report (tests tagged ${KVM_TAG}, run in the lab) ---\n`);
    process.stdout.write(suite?.stdout.toString() ?? '');
    process.stdout.write(suite?.stderr.toString() ?? '');
    process.stdout.write(`      --- boot to first command ${lab.timings.bootMs} ms, lab total ${lab.timings.totalMs} ms ---\n`);
  });

  it('gives the guest a working /dev/kvm (KVM_GET_API_VERSION is 12)', () => {
    const probe = lab.commands[0];
    expect(probe?.exitStatus, probe?.stderr.toString()).to.equal(0);
    expect(JSON.parse(probe?.stdout.toString() ?? '')).to.deep.equal({ available: true, apiVersion: 12 });
  });

  it('returns a command\'s stdout, stderr and exit status exactly', () => {
    const exact = lab.commands[1];
    expect(exact?.exitStatus).to.equal(42);
    expect(exact?.signal).to.equal(null);
    expect(exact?.stdout.equals(awkwardBytes)).to.equal(true);
    expect(exact?.stderr.toString()).to.equal(bulk);
  });

  it('carries files in with their content and mode (the kernel unpacked our cpio)', () => {
    const stat = lab.commands[2];
    const sha = createHash('sha256').update(carried).digest('hex');
    expect(stat?.stdout.toString()).to.equal(`751 ${carried.length}\n${sha}  /lab/carried.bin\n`);
  });

  it('reports a command killed by a signal, and the first failure as the overall status', () => {
    expect(lab.commands[3]).to.include({ exitStatus: null, signal: 'SIGKILL' });
    expect(lab.exitStatus).to.equal(42);
  });

  it('passes every KVM-tagged test inside the lab', () => {
    const suite = lab.commands[4];
    expect(suite?.exitStatus, 'inner mocha failed: see the inner report above').to.equal(0);
    expect(suite?.stdout.toString()).to.match(/\d+ passing/);
  });
});
