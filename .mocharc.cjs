// Mocha's configuration. Where KVM work must go to the lab (no usable /dev/kvm, a PVM host, or
// TS_VMM_LAB=force), suites tagged @kvm are left out of this run whole, their hooks included; the lab
// suite (test/lab/kvm-suite.test.ts) runs them inside the lab. A --grep on the command line replaces this.
const { spawnSync } = require('node:child_process');

const probe = spawnSync(
  process.execPath,
  ['--input-type=module', '-e', "import { labNeeded } from './dist/src/kvm/probe.js'; process.stdout.write(String(labNeeded()));"],
  { cwd: __dirname, encoding: 'utf8' },
);
if (probe.status !== 0) throw new Error(`cannot tell whether KVM works here (build first: npm run build): ${probe.stderr.trim()}`);

// Test files named on the command line are the whole run; otherwise every test is.
const named = process.argv.slice(2).some((arg) => arg.endsWith('.js'));

module.exports = {
  ...(named ? {} : { spec: ['dist/test/**/*.test.js'] }),
  timeout: 20000,
  recursive: true,
  exit: true,
  ...(probe.stdout === 'true' ? { grep: '^(?!.*@kvm)' } : {}),
};
