// The OCI container monitor's state machine (creating -> created -> running -> stopped, or stopped by a signal
// before start), driven through its real control socket and state files, with the agent as a stand-in VM.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { ensureGuestAgent } from '../../src/oci/guest-agent.js';
import { CONTROL_SOCKET, CREATED_LINE, START_REPLY, START_REQUEST } from '../../src/oci/control-protocol.js';
import { monitorContainer } from '../../src/oci/monitor.js';
import { processStartTime, RUNTIME_SPEC_VERSION, StateStore } from '../../src/oci/runtime-state.js';
import { agentVm, standInRun } from './stand-in-vm.js';

describe('OCI container monitor with a stand-in VM', function () {
  this.timeout(60000);
  let dir: string;
  let agent: string;
  let store: StateStore;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-monitor-'));
    agent = await ensureGuestAgent(join(dir, 'cache'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  beforeEach(() => {
    store = new StateStore(mkdtempSync(join(dir, 'root-')));
  });

  async function monitor(id: string, args: string[]) {
    await store.create({ ociVersion: RUNTIME_SPEC_VERSION, id, status: 'creating', pid: 0, bundle: '/b', annotations: {}, created: 'now' });
    const report = new PassThrough();
    const stdout = new PassThrough();
    let output = '';
    stdout.on('data', (c: Buffer) => {
      output += c.toString();
    });
    const stderr = new PassThrough();
    stderr.resume();
    const { run } = standInRun(dir, id.slice(0, 8), args);
    let scratchDir: string | undefined;
    const exit = monitorContainer(
      store,
      id,
      report,
      { stdin: undefined, stdout, stderr },
      { log: () => undefined },
      {
        prepare: async (_bundle, settings) => {
          scratchDir = settings.scratchDir;
          return { ...run, diskLock: '/b/rootfs.ext4.lock' };
        },
        launch: agentVm(agent).launch,
      },
    );
    let line = '';
    for await (const chunk of report) line += (chunk as Buffer).toString();
    return { exit, line: line.trim(), output: () => output, scratchDir: () => scratchDir };
  }

  async function requestStart(id: string): Promise<string> {
    const socket = connect(store.socket(id, CONTROL_SOCKET));
    await once(socket, 'connect');
    socket.write(START_REQUEST);
    let reply = '';
    for await (const chunk of socket) reply += (chunk as Buffer).toString();
    return reply;
  }

  it('is created once the agent is ready, runs at start, and records the exit status', async () => {
    const m = await monitor('c1', ['/bin/sh', '-c', 'echo hello; exit 5']);
    expect(m.line).to.equal(CREATED_LINE);
    const created = await store.live('c1');
    expect(created).to.deep.include({ status: 'created', pid: process.pid, diskLock: '/b/rootfs.ext4.lock' });
    // What `delete` needs to leave nothing behind: the VMM's identity, and the run's files in the container's socket directory.
    expect(created.vmm?.startTime).to.equal(processStartTime(created.vmm!.pid));
    expect(m.scratchDir()).to.equal(store.socketDir('c1'));
    expect(m.output()).to.equal('');
    expect(await requestStart('c1')).to.equal(START_REPLY);
    expect(await m.exit).to.equal(5);
    expect(m.output()).to.equal('hello\n');
    expect(await store.live('c1')).to.deep.include({ status: 'stopped', exitStatus: 5 });
  });

  it('stops without running the process when signalled before start', async () => {
    const m = await monitor('c2', ['/bin/sh', '-c', 'echo should-not-run']);
    expect(m.line).to.equal(CREATED_LINE);
    process.emit('SIGTERM', 'SIGTERM');
    expect(await m.exit).to.equal(1);
    expect(m.output()).to.equal('');
    expect(await store.live('c2')).to.deep.include({ status: 'stopped', failure: 'stopped by SIGTERM before start' });
  });

  it("serves a Kubernetes container id (64 characters) under a deep state root: the sockets' paths stay short", async () => {
    store = new StateStore(join(store.root, 'run', 'containerd', 'runc', 'k8s.io'));
    const id = 'f'.repeat(64);
    expect(Buffer.byteLength(join(store.dir(id), CONTROL_SOCKET)), 'the container directory is too deep for a socket').to.be.above(107);
    const m = await monitor(id, ['/bin/sh', '-c', 'echo long id']);
    expect(m.line).to.equal(CREATED_LINE);
    expect(await requestStart(id)).to.equal(START_REPLY);
    expect(await m.exit).to.equal(0);
    expect(m.output()).to.equal('long id\n');
  });

  it('ignores a malformed control request', async () => {
    const m = await monitor('c3', ['/bin/true']);
    const socket = connect(store.socket('c3', CONTROL_SOCKET));
    await once(socket, 'connect');
    socket.write('stop\n');
    await once(socket, 'close');
    expect((await store.live('c3')).status).to.equal('created');
    expect(await requestStart('c3')).to.equal(START_REPLY);
    expect(await m.exit).to.equal(0);
  });
});
