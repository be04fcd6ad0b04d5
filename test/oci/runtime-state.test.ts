import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSignal } from '../../src/cli/oci.js';
import {
  checkContainerId,
  processStartTime,
  publicState,
  RUNTIME_SPEC_VERSION,
  signalVerified,
  StateError,
  StateStore,
  UnreadableStateError,
  type ContainerRecord,
} from '../../src/oci/runtime-state.js';

describe('OCI runtime state', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'ts-vmm-state-'));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const record = (id: string, changes: Partial<ContainerRecord> = {}): ContainerRecord => ({
    ociVersion: RUNTIME_SPEC_VERSION,
    id,
    status: 'creating',
    pid: 0,
    bundle: '/b',
    annotations: { a: 'b' },
    created: 'now',
    ...changes,
  });

  it('accepts runc-style ids and refuses ones that are not directory names', () => {
    for (const id of ['abc', 'a.b-c_d+1', '0x']) expect(checkContainerId(id)).to.equal(id);
    for (const id of ['', '.', '..', 'a/b', '-x', 'a b']) expect(() => checkContainerId(id)).to.throw(StateError, 'not a valid container id');
  });

  it('creates, refuses a duplicate id, reads back and removes (its socket directory too)', async () => {
    const store = new StateStore(root);
    await store.create(record('c1'));
    expect(statSync(store.socketDir('c1')).mode & 0o777).to.equal(0o700);
    await store.create(record('c1')).then(
      () => expect.fail('duplicate created'),
      (e: Error) => expect(e.message).to.match(/"c1" already exists/),
    );
    expect((await store.read('c1')).status).to.equal('creating');
    await store.remove('c1');
    expect(existsSync(store.socketDir('c1'))).to.equal(false);
    await store.read('c1').then(
      () => expect.fail('read after remove'),
      (e: Error) => expect(e.message).to.match(/"c1" does not exist/),
    );
  });

  it('reports a live monitor as recorded, a dead or replaced one as stopped', async () => {
    const store = new StateStore(root);
    const child = spawn('sleep', ['30']);
    await once(child, 'spawn');
    await store.create(record('live', { status: 'running', pid: child.pid!, pidStartTime: processStartTime(child.pid!) }));
    expect((await store.live('live')).status).to.equal('running');
    await store.write(record('live', { status: 'running', pid: child.pid!, pidStartTime: 'not-its-start-time' }));
    expect((await store.live('live')).status).to.equal('stopped');
    await store.write(record('live', { status: 'running', pid: child.pid!, pidStartTime: processStartTime(child.pid!) }));
    child.kill('SIGKILL');
    await once(child, 'exit');
    const gone = await store.live('live');
    expect(gone.status).to.equal('stopped');
    expect(publicState(gone)).to.deep.equal({ ociVersion: RUNTIME_SPEC_VERSION, id: 'live', status: 'stopped', pid: 0, bundle: '/b', annotations: { a: 'b' } });
  });

  it('names a container directory without state, or with unreadable state, and the way to remove it', async () => {
    const store = new StateStore(root);
    mkdirSync(join(root, 'bare'));
    const refused = async (action: Promise<unknown>, pattern: RegExp): Promise<void> =>
      action.then(
        () => expect.fail('accepted'),
        (e: Error) => {
          expect(e).to.be.instanceOf(UnreadableStateError);
          expect(e.message).to.match(pattern);
        },
      );
    await refused(store.read('bare'), /^container "bare" has no state: .*\/bare\/state.json is missing; ts-vmm delete --force bare removes it$/);
    await refused(store.create(record('bare')), /^container "bare" has no state: /);
    for (const [content, problem] of [
      ['{"id": "bad", "stat', 'JSON'],
      [JSON.stringify(record('bad', { pid: -1 })), 'pid -1'],
      [JSON.stringify(record('other')), 'names container "other"'],
      [JSON.stringify(record('bad', { status: 'frozen' as never })), 'status "frozen"'],
    ]) {
      mkdirSync(join(root, 'bad'), { recursive: true });
      writeFileSync(join(root, 'bad', 'state.json'), content!);
      await refused(
        store.live('bad'),
        new RegExp(`^container "bad" has unreadable state: .*state.json: .*${problem}.*; ts-vmm delete --force bad removes it$`),
      );
    }
  });

  it('signals only a process whose pid and start time both match, never pid 0 or a negative pid', async () => {
    const child = spawn('sleep', ['30']);
    await once(child, 'spawn');
    const startTime = processStartTime(child.pid!)!;
    expect(signalVerified(0, startTime, 0)).to.equal(false);
    expect(signalVerified(-1, startTime, 0)).to.equal(false);
    expect(signalVerified(child.pid!, undefined, 'SIGKILL')).to.equal(false);
    expect(signalVerified(child.pid!, `${startTime}0`, 'SIGKILL')).to.equal(false);
    expect(child.exitCode).to.equal(null);
    expect(signalVerified(child.pid!, startTime, 'SIGKILL')).to.equal(true);
    await once(child, 'exit');
  });

  it("reads a process's start time, and none for a missing process", () => {
    expect(processStartTime(process.pid)).to.match(/^[0-9]+$/);
    expect(processStartTime(0x7ffffff0)).to.equal(undefined);
  });

  it('parses signals by name, short name and number', () => {
    expect([parseSignal('SIGKILL'), parseSignal('term'), parseSignal('2')]).to.deep.equal([9, 15, 2]);
    expect(() => parseSignal('SIGNOPE')).to.throw('not a signal');
    expect(() => parseSignal('0')).to.throw('not a signal');
  });
});
