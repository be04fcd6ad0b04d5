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
