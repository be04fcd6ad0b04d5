// `ts-vmm run` as a user calls it, on the paths that end before any VM: bad bundles and bad options are
// reported in one line with status 125, before anything is built, fetched or booted, and leave nothing behind.
import { expect } from 'chai';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { entries, runCli, scratch, type Scratch } from './cli-process.js';

describe('ts-vmm run before the VM', () => {
  let s: Scratch;
  let labEnv: NodeJS.ProcessEnv;
  beforeEach(() => {
    s = scratch('ts-vmm-cli-run-');
    // The lab path, with an agent that cannot be found: reaching the agent (or anything after it) shows as that error.
    labEnv = { ...s.env, TS_VMM_LAB: 'force', TS_VMM_AGENT: join(s.dir, 'no-agent') };
  });
  afterEach(() => rmSync(s.dir, { recursive: true, force: true }));

  const leftovers = (): string[] => [...entries(join(s.dir, 'tmp')), ...entries(join(s.dir, 'cache')), ...entries(join(s.dir, 'state'))];

  it('reports an invalid bundle before going to the lab', async () => {
    const bundle = join(s.dir, 'not-a-bundle');
    mkdirSync(bundle);
    const r = await runCli(['run', bundle], labEnv);
    expect(r.stderr).to.equal(`ts-vmm: ${bundle}/config.json: no such file (is this an OCI bundle directory?)\n`);
    expect(r.status).to.equal(125);
    expect(leftovers()).to.deep.equal([]);
  });

  it('reports a missing entrypoint before going to the lab', async () => {
    const bundle = join(s.dir, 'b');
    mkdirSync(join(bundle, 'rootfs'), { recursive: true });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', root: { path: 'rootfs' }, process: { args: ['/app'], cwd: '/' } }));
    const r = await runCli(['run', bundle], labEnv);
    expect(r.stderr).to.match(/^ts-vmm: [^\n]*rootfs\/app: entrypoint "\/app" not found \(process.args\[0\] in [^\n]*\)\n$/);
    expect(r.status).to.equal(125);
    expect(leftovers()).to.deep.equal([]);
  });
});

describe('ts-vmm run options', () => {
  let s: Scratch;
  let bundle: string;
  beforeEach(() => {
    s = scratch('ts-vmm-cli-run-');
    bundle = join(s.dir, 'b');
    mkdirSync(join(bundle, 'rootfs'), { recursive: true });
    writeFileSync(join(bundle, 'rootfs', 'app'), '', { mode: 0o755 });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', root: { path: 'rootfs' }, process: { args: ['/app'], cwd: '/' } }));
  });
  afterEach(() => rmSync(s.dir, { recursive: true, force: true }));

  for (const [path, env] of [
    ['lab', { TS_VMM_LAB: 'force' }],
    ["this host's", {}],
  ] as const) {
    it(`refuses a --console-log it cannot write in one line (${path} path)`, async () => {
      const r = await runCli(['run', '--console-log', join(s.dir, 'nonexistent', 'x'), bundle], { ...s.env, ...env, TS_VMM_AGENT: join(s.dir, 'no-agent') });
      expect(r.stderr).to.match(/^ts-vmm: --console-log [^\n]*\/nonexistent\/x: ENOENT: no such file or directory[^\n]*\n$/);
      expect(r.status).to.equal(125);
      expect(entries(join(s.dir, 'tmp'))).to.deep.equal([]);
    });

    it(`refuses --kernel without --modules and --modules without --kernel (${path} path)`, async () => {
      for (const options of [
        ['--kernel', '/boot/vmlinuz'],
        ['--modules', '/lib/modules/x'],
      ]) {
        const r = await runCli(['run', ...options, bundle], { ...s.env, ...env, TS_VMM_AGENT: join(s.dir, 'no-agent') });
        expect(r.stderr).to.equal('ts-vmm: --kernel and --modules go together: a kernel needs its own modules\n');
        expect(r.status).to.equal(125);
      }
    });
  }
});
