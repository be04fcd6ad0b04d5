// The OCI runtime verbs as containerd's shim calls them, on the paths that need no VM: validation order,
// state handling, signalling only a verified monitor, and cleanup. Exit status 1 and one line for every error.
import { expect } from 'chai';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { entries, runCli, scratch, type Scratch } from './cli-process.js';

describe('ts-vmm create/state/kill/delete without a VM', () => {
  let s: Scratch;
  let root: string;
  beforeEach(() => {
    s = scratch('ts-vmm-cli-oci-');
    root = join(s.dir, 'root');
  });
  afterEach(() => rmSync(s.dir, { recursive: true, force: true }));

  it('create reports an invalid bundle first, before asking for KVM, and records nothing', async () => {
    const bundle = join(s.dir, 'not-a-bundle');
    mkdirSync(bundle);
    const r = await runCli(['create', '--root', root, '--bundle', bundle, 'c1'], { ...s.env, TS_VMM_LAB: 'force' });
    expect(r.stderr).to.equal(`ts-vmm: ${bundle}/config.json: no such file (is this an OCI bundle directory?)\n`);
    expect(r.status).to.equal(1);
    expect(entries(root)).to.deep.equal([]);
    expect(entries(join(s.dir, 'tmp'))).to.deep.equal([]);
  });
});

describe('ts-vmm create options', () => {
  let s: Scratch;
  beforeEach(() => { s = scratch('ts-vmm-cli-oci-'); });
  afterEach(() => rmSync(s.dir, { recursive: true, force: true }));

  it('refuses --kernel without --modules rather than dropping it', async () => {
    const root = join(s.dir, 'root');
    const r = await runCli(['create', '--root', root, '--kernel', '/boot/vmlinuz', 'c1'], { ...s.env, TS_VMM_LAB: 'force' });
    expect(r.stderr).to.equal('ts-vmm: --kernel and --modules go together: a kernel needs its own modules\n');
    expect(r.status).to.equal(1);
    expect(entries(root)).to.deep.equal([]);
  });
});
