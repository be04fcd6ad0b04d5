// Where KVM work must go to the lab, mocha's configuration leaves KVM-tagged suites out whole: their
// tests and their hooks, which could not even open /dev/kvm.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../../src/sys/project-paths.js';

describe('the KVM gate', () => {
  it('with TS_VMM_LAB=force, runs no hook of a KVM-tagged suite and the plain suites as usual', function () {
    this.timeout(60_000);
    const fixture = fileURLToPath(new URL('./fixtures/kvm-gate-suite.js', import.meta.url));
    // The project's configuration with only the fixture as spec (mocha adds a command-line spec to the configured one).
    const dir = mkdtempSync(join(tmpdir(), 'kvm-gate-'));
    const config = join(dir, 'mocharc.cjs');
    writeFileSync(config, `module.exports = { ...require(${JSON.stringify(join(projectRoot(), '.mocharc.cjs'))}), spec: [${JSON.stringify(fixture)}] };\n`);
    const run = spawnSync(process.execPath, ['node_modules/mocha/bin/mocha.js', '--config', config, '--reporter', 'dot'], {
      cwd: projectRoot(),
      env: { ...process.env, TS_VMM_LAB: 'force' },
      encoding: 'utf8',
    });
    rmSync(dir, { recursive: true });
    expect(run.stdout)
      .to.match(/1 passing/)
      .and.not.match(/hook ran|failing/);
    expect(run.status, run.stdout + run.stderr).to.equal(0);
  });
});
