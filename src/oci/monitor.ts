// The process behind an OCI container (`ts-vmm create` starts it detached; its pid is the container's pid).
// It boots the VM and waits until the guest agent has made the container's mounts and is ready: the container
// is then `created`. `ts-vmm start` asks it over a Unix socket in the state directory to start the process
// (`running`); when the workload exits it records `stopped` with the exit status and exits with that status.
// Signals sent by `ts-vmm kill` arrive here: before start they stop the VM, after start they go to the workload.
import { prepareBundleRun } from './run-selection.js';
import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { launchVm } from './vm-launch.js';
import type { VmLauncher } from './vm-request.js';
import { bootWorkload, runWorkload, type BootedWorkload, type PreparedRun, type RunSettings, type Stdio } from './runner.js';
import { processStartTime, type StateStore, type ContainerRecord } from './runtime-state.js';
import { FORWARDED_SIGNALS } from './agent-protocol.js';
import { errorMessage } from '../sys/error-message.js';
import { CONTROL_SOCKET, CREATED_LINE, START_REPLY, START_REQUEST } from './control-protocol.js';

/** Resolves with the connection of the first well-formed start request (answered once the state says running). */
async function waitForStart(server: Server): Promise<Socket> {
  return new Promise((resolve) => {
    server.on('connection', (socket) => {
      socket.setEncoding('utf8');
      let text = '';
      socket.on('data', (chunk: string) => {
        text += chunk;
        if (text === START_REQUEST) {
          resolve(socket);
        } else if (!START_REQUEST.startsWith(text)) {
          socket.destroy();
        }
      });
      socket.on('error', () => undefined);
    });
  });
}

/** How the monitor gets a VM: by default the bundle's disk and initramfs and a `ts-vmm boot` process. */
export interface VmSource {
  prepare(bundle: string, settings: RunSettings): Promise<PreparedRun>;
  launch: VmLauncher;
}

const realVms: VmSource = { prepare: prepareBundleRun, launch: launchVm };

/** Runs the container `id`; `report` is the pipe to `ts-vmm create`. Returns the monitor's exit status. */
export async function monitorContainer(
  store: StateStore,
  id: string,
  report: Writable,
  stdio: Stdio,
  settings: RunSettings,
  vms: VmSource = realVms,
): Promise<number> {
  let record: ContainerRecord = await store.read(id);
  const save = async (changes: Partial<ContainerRecord>): Promise<void> => {
    record = { ...record, ...changes };
    await store.write(record);
  };
  // First of all, so that from here on `delete --force` can end this process (and only this one).
  await save({ pid: process.pid, pidStartTime: processStartTime(process.pid) });
  let booted: BootedWorkload;
  let control: Server;
  try {
    // The run's files (its sockets among them) live in the container's socket directory, which `delete` removes
    // with the container's state whatever ended this process.
    const prepared = await vms.prepare(record.bundle, { ...settings, scratchDir: store.socketDir(id) });
    try {
      if (prepared.diskLock !== undefined) await save({ diskLock: prepared.diskLock });
      if (prepared.exec !== undefined) await save({ exec: prepared.exec });
      // The VMM is recorded as soon as it exists, so that `delete` can end it even while it boots.
      const launchRecorded: VmLauncher = async (request) => {
        const vm = await vms.launch(request);
        const startTime = vm.pid === undefined ? undefined : processStartTime(vm.pid);
        if (startTime !== undefined) await save({ vmm: { pid: vm.pid!, startTime } });
        return vm;
      };
      booted = await bootWorkload(prepared, launchRecorded, stdio, settings);
    } catch (e) {
      await prepared.cleanup();
      throw e;
    }
    control = createServer();
    control.listen(store.socket(id, CONTROL_SOCKET));
    await once(control, 'listening');
  } catch (e) {
    report.end(`error: ${errorMessage(e).split('\n')[0]}\n`);
    await save({ status: 'stopped', failure: errorMessage(e) });
    return 1;
  }

  // Until start, a signal means "do not run": stop the VM and record it.
  let stopSignal: NodeJS.Signals | undefined;
  let stopBeforeStart!: () => void;
  const stopped = new Promise<void>((resolve) => {
    stopBeforeStart = resolve;
  });
  const onSignal = (signal: NodeJS.Signals): void => {
    stopSignal = signal;
    stopBeforeStart();
  };
  for (const s of FORWARDED_SIGNALS) process.on(s, onSignal);
  await save({ status: 'created' });
  report.end(`${CREATED_LINE}\n`);

  const requester = await Promise.race([waitForStart(control), stopped]);
  for (const s of FORWARDED_SIGNALS) process.off(s, onSignal);
  if (stopSignal !== undefined) {
    control.close();
    booted.io.close();
    booted.vm.stop();
    await booted.vm.exited;
    await booted.prepared.cleanup();
    await save({ status: 'stopped', failure: `stopped by ${stopSignal} before start` });
    return 1;
  }
  await save({ status: 'running' });
  requester?.end(START_REPLY);
  control.close();
  try {
    const status = await runWorkload(booted, stdio);
    await save({ status: 'stopped', exitStatus: status });
    return status;
  } catch (e) {
    await save({ status: 'stopped', failure: errorMessage(e) });
    stdio.stderr.write(`ts-vmm: ${errorMessage(e)}\n`);
    return 1;
  }
}
