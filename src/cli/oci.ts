// The OCI runtime command line (runc/crun convention, as containerd's shim and CRI-O call it):
//   ts-vmm create [--bundle DIR] [--pid-file FILE] [--root DIR] <id>
//   ts-vmm start|state|kill|delete [--root DIR] <id> ...
//   ts-vmm exec [--process FILE] [--detach --pid-file FILE] [--tty --console-socket S] <id> [command...]
// `create` leaves a monitor process (the container's pid) holding a booted VM whose agent has set the container
// up; `start` lets the process run. State lives under --root (default /run/ts-vmm for root).
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, createWriteStream, readFileSync, statSync } from 'node:fs';
import { Socket, connect } from 'node:net';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { dirname, resolve } from 'node:path';
import type { Duplex, Readable, Writable } from 'node:stream';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { cliEntry } from '../sys/project-paths.js';
import { CONTROL_SOCKET, CREATED_LINE, START_REPLY, START_REQUEST } from '../oci/control-protocol.js';
import type { ExecRelayPlan } from '../oci/exec.js';
import {
  checkContainerId,
  defaultStateRoot,
  killVerified,
  publicState,
  RUNTIME_SPEC_VERSION,
  signalVerified,
  StateError,
  StateStore,
  NoSuchContainerError,
  UnreadableStateError,
  type ContainerRecord,
} from '../oci/runtime-state.js';
import { errorMessage } from '../sys/error-message.js';
import { reportFailure } from './report-failure.js';
import type { RunCommandOptions } from './run.js';
import { addRuntimeGlobals, logToRuntimeLog, VALUED_GLOBAL_OPTIONS, type RuntimeGlobals } from './runtime-log.js';

interface RootOption {
  root?: string;
}

const storeOf = (options: RootOption): StateStore => new StateStore(resolve(options.root ?? defaultStateRoot()));

/** SIGTERM, TERM or 15 -> 15. */
export function parseSignal(text: string): number {
  if (/^[0-9]+$/.test(text)) {
    const n = Number(text);
    if (n >= 1 && n <= 64) return n;
  } else {
    const name = (text.toUpperCase().startsWith('SIG') ? text.toUpperCase() : `SIG${text.toUpperCase()}`) as NodeJS.Signals;
    const n = osConstants.signals[name];
    if (n !== undefined) return n;
  }
  throw new InvalidArgumentError(`"${text}" is not a signal name or number`);
}

async function readLine(stream: Readable): Promise<string> {
  let text = '';
  stream.setEncoding('utf8');
  for await (const chunk of stream) {
    text += chunk as string;
    if (text.includes('\n')) break;
  }
  return text.split('\n')[0] ?? '';
}

interface CreateOptions extends RootOption, RunCommandOptions {
  bundle: string;
  pidFile?: string;
  consoleSocket?: string;
}

async function create(id: string, options: CreateOptions, globals: RuntimeGlobals): Promise<void> {
  // Loaded here, not with the command line: the verbs an engine calls most (state, kill, delete) need none of it.
  const [{ checkKernelPair }, { checkBundle }, { BundleError }, { kvmUnsuitableReason }, { openPty }, { sendFd }] = await Promise.all([
    import('../oci/kernel-choice.js'),
    import('../oci/runner.js'),
    import('../oci/bundle-config.js'),
    import('../kvm/probe.js'),
    import('../sys/pty.js'),
    import('../sys/fd-passing.js'),
  ]);
  checkContainerId(id);
  checkKernelPair({ vmlinuz: options.kernel, modulesDir: options.modules });
  const bundle = resolve(options.bundle);
  // create's stderr is the container's (an engine reads it as the workload's output): with --log, as runc, the
  // runtime's own warnings go there instead.
  const warn = (message: string): void => {
    if (globals.log === undefined) process.stderr.write(`ts-vmm: ${message}\n`);
    else logToRuntimeLog(globals, 'warning', message.replace(/^warning: /, ''));
  };
  const config = checkBundle(bundle, warn);
  // As runc: a terminal is handed to the engine over --console-socket, and only a terminal is.
  if (config.process.terminal && options.consoleSocket === undefined) throw new BundleError(`${config.configPath}: process.terminal needs --console-socket`);
  if (!config.process.terminal && options.consoleSocket !== undefined) throw new BundleError(`--console-socket needs process.terminal in ${config.configPath}`);
  const pidFile = options.pidFile === undefined ? undefined : resolve(options.pidFile);
  if (pidFile !== undefined) checkPidFileDirectory(pidFile);
  const unsuitable = kvmUnsuitableReason();
  if (unsuitable !== undefined) throw new StateError(`ts-vmm create needs KVM that boots the stock kernel: ${unsuitable}`);
  const store = storeOf(options);
  const record: ContainerRecord = {
    ociVersion: RUNTIME_SPEC_VERSION,
    id,
    status: 'creating',
    pid: 0,
    bundle,
    annotations: config.annotations,
    created: new Date().toISOString(),
  };
  await store.create(record);
  const args = [cliEntry(), 'oci-monitor', '--root', store.root, id];
  if (options.kernel !== undefined && options.modules !== undefined) args.push('--kernel', resolve(options.kernel), '--modules', resolve(options.modules));
  // The monitor keeps create's stdio (the container's stdio, as with runc), or with a console socket has a new
  // pty's slave as its terminal, and reports on fd 3.
  const pty = options.consoleSocket === undefined ? undefined : openPty();
  const stdio = pty === undefined ? 'inherit' : pty.slave;
  const monitor = spawn(process.execPath, args, { stdio: [stdio, stdio, stdio, 'pipe'], detached: true });
  const report = monitor.stdio[3] as Readable;
  try {
    if (pty !== undefined && options.consoleSocket !== undefined) {
      try {
        sendFd(resolve(options.consoleSocket), pty.master, pty.slavePath);
      } finally {
        closeSync(pty.master);
        closeSync(pty.slave);
      }
    }
    const outcome = await readLine(report);
    if (outcome !== CREATED_LINE) {
      throw new StateError(outcome.startsWith('error: ') ? outcome.slice(7) : `the monitor exited before the container was created`);
    }
    if (pidFile !== undefined) {
      await writeFile(pidFile, String(monitor.pid)).catch((e: unknown) => {
        throw new StateError(`--pid-file ${pidFile}: ${errorMessage(e)}`);
      });
    }
  } catch (e) {
    // A create that fails leaves nothing: no monitor, no VM, no state.
    const recorded = await store.read(id).catch(() => undefined);
    if (recorded === undefined) monitor.kill('SIGKILL'); // still this process's child: its pid is certainly the monitor's
    await destroy(store, id, recorded);
    throw e;
  } finally {
    monitor.unref();
    report.destroy();
  }
}

/** The pid file's directory must exist before a VM is booted for the container. */
function checkPidFileDirectory(pidFile: string): void {
  const dir = dirname(pidFile);
  let isDirectory = false;
  try {
    isDirectory = statSync(dir).isDirectory();
  } catch {
    isDirectory = false;
  }
  if (!isDirectory) throw new StateError(`--pid-file ${pidFile}: ${dir} is not a directory`);
}

async function start(id: string, options: RootOption): Promise<void> {
  const store = storeOf(options);
  const record = await store.live(id);
  if (record.status !== 'created') throw new StateError(`container "${id}" is ${record.status}, not created`);
  const socket = connect(store.socket(id, CONTROL_SOCKET));
  await once(socket, 'connect');
  // Not end(): the monitor's side would then close before it could answer.
  socket.write(START_REQUEST);
  const reply = await readLine(socket);
  socket.end();
  if (`${reply}\n` !== START_REPLY) throw new StateError(`container "${id}" did not start`);
}

async function state(id: string, options: RootOption, out: Writable): Promise<void> {
  out.write(`${JSON.stringify(publicState(await storeOf(options).live(id)), null, 2)}\n`);
}

/**
 * runc pause/resume: the VMM stops (SIGSTOP) and goes on (SIGCONT) whole, vCPUs and devices alike, so the guest
 * sees only time jump. Signals sent meanwhile wait in the VMM's socket until it goes on.
 */
async function setPaused(id: string, paused: boolean, options: RootOption): Promise<void> {
  const store = storeOf(options);
  const record = await store.live(id);
  const from = paused ? 'running' : 'paused';
  if (record.status !== from) throw new StateError(`container "${id}" is ${record.status}, not ${from}`);
  if (!record.vmm || !signalVerified(record.vmm.pid, record.vmm.startTime, paused ? 'SIGSTOP' : 'SIGCONT')) {
    throw new StateError(`container "${id}" has no running VM to ${paused ? 'pause' : 'resume'}`);
  }
  await store.write({ ...record, status: paused ? 'paused' : 'running' });
}

/** runc ps: the container's processes as the host sees them, the monitor and the VMM (the workload's are in the guest). */
async function ps(id: string, options: RootOption & { format: string }, out: Writable): Promise<void> {
  const record = await storeOf(options).live(id);
  const pids = record.status === 'stopped' ? [] : [record.pid, ...(record.vmm ? [record.vmm.pid] : [])].filter((pid) => pid > 0);
  if (options.format === 'json') {
    out.write(`${JSON.stringify(pids)}\n`);
    return;
  }
  out.write('PID\tCMD\n');
  for (const pid of pids)
    out.write(
      `${pid}\t${await readFile(`/proc/${pid}/comm`, 'utf8').then(
        (c) => c.trim(),
        () => '?',
      )}\n`,
    );
}

interface ExecOptions extends RootOption {
  process?: string;
  tty?: boolean;
  consoleSocket?: string;
  detach?: boolean;
  pidFile?: string;
  cwd?: string;
  env: string[];
  user?: string;
  additionalGids: string[];
  /** false with --no-new-privs (commander's reading of a --no- option). */
  newPrivs: boolean;
  preserveFds: string;
}

/** runc exec: a further process in the container's guest, relayed by this process or, detached, by a child of it. */
async function exec(id: string, command: string[], options: ExecOptions, globals: RuntimeGlobals): Promise<void> {
  const { ExecError, execProcess, parseExecUser, relayExec, toPlan } = await import('../oci/exec.js');
  const record = await storeOf(options).live(id);
  if (record.status !== 'running' && record.status !== 'created')
    throw new StateError(`container "${id}" is ${record.status}: no process can be started in it`);
  if (record.exec === undefined) throw new StateError(`container "${id}" takes no further process: its image names the only one (a confidential workload)`);
  if (options.preserveFds !== '0') throw new ExecError('--preserve-fds: host file descriptors cannot reach a process in the guest');
  const warn = (message: string): void => logToRuntimeLog(globals, 'warning', message.replace(/^warning: /, ''));
  const spec = execProcess(
    record.bundle,
    options.process === undefined ? undefined : resolve(options.process),
    {
      args: command,
      env: options.env,
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      ...(options.user === undefined ? {} : { user: parseExecUser(options.user) }),
      additionalGids: options.additionalGids.map((g) => parseExecUser(g).uid),
      terminal: options.tty === true,
      noNewPrivileges: options.newPrivs === false,
    },
    warn,
  );
  // runc's rules: a terminal for a detached process goes to the engine over the console socket, and only a terminal does.
  if (spec.terminal && options.detach && options.consoleSocket === undefined) throw new ExecError('exec --detach with a terminal needs --console-socket');
  if (!spec.terminal && options.consoleSocket !== undefined) throw new ExecError('--console-socket needs a terminal (--tty, or terminal in the process)');
  const plan = toPlan(record.exec, spec);
  if (!options.detach && options.consoleSocket === undefined) {
    process.exitCode = await relayExec(plan.target, plan, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }, guestSaid, (failure) => {
      if (failure !== undefined) logToRuntimeLog(globals, 'error', failure.message);
    });
    process.stdin.destroy();
    return;
  }
  const pidFile = options.pidFile === undefined ? undefined : resolve(options.pidFile);
  if (pidFile !== undefined) checkPidFileDirectory(pidFile);
  const relay = await startRelay(plan, options.consoleSocket);
  if (!options.detach) {
    const [code, signal] = (await once(relay, 'exit')) as [number | null, NodeJS.Signals | null];
    process.exitCode = code ?? 128 + (signal === null ? 0 : osConstants.signals[signal]);
    return;
  }
  if (pidFile !== undefined) {
    await writeFile(pidFile, String(relay.pid)).catch((e: unknown) => {
      relay.kill('SIGKILL');
      throw new StateError(`--pid-file ${pidFile}: ${errorMessage(e)}`);
    });
  }
  relay.unref();
}

const guestSaid = (message: string): void => {
  process.stderr.write(`ts-vmm: guest: ${message}\n`);
};

/**
 * Starts the relay process (its stdio: this process's, or a new pty's slave whose master goes to the console
 * socket) and waits until the program runs in the guest. The plan travels over a private socket pair, not argv.
 */
async function startRelay(plan: ExecRelayPlan, consoleSocket: string | undefined): Promise<ChildProcess> {
  const [{ ExecError }, { openPty }, { sendFd }] = await Promise.all([import('../oci/exec.js'), import('../sys/pty.js'), import('../sys/fd-passing.js')]);
  const pty = consoleSocket === undefined ? undefined : openPty();
  const stdio = pty === undefined ? 'inherit' : pty.slave;
  const relay = spawn(process.execPath, [cliEntry(), 'oci-exec-relay'], { stdio: [stdio, stdio, stdio, 'pipe'], detached: true });
  const channel = relay.stdio[3] as Duplex;
  try {
    if (pty !== undefined && consoleSocket !== undefined) {
      try {
        sendFd(resolve(consoleSocket), pty.master, pty.slavePath);
      } finally {
        closeSync(pty.master);
        closeSync(pty.slave);
      }
    }
    channel.write(`${JSON.stringify(plan)}\n`);
    const outcome = await readLine(channel);
    if (outcome !== EXEC_STARTED_LINE)
      throw new ExecError(outcome.startsWith('error: ') ? outcome.slice(7) : 'the exec relay ended before the process started');
    return relay;
  } catch (e) {
    relay.kill('SIGKILL');
    throw e;
  } finally {
    channel.destroy();
  }
}

const EXEC_STARTED_LINE = 'started';

/** The first line from a stream that stays open for the answer (readLine's loop would end it); `ended` if none. */
function firstLine(stream: Readable, ended: () => Error): Promise<string> {
  return new Promise((resolveLine, reject) => {
    const chunks: Buffer[] = [];
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      const text = Buffer.concat(chunks);
      const eol = text.indexOf(0x0a);
      if (eol < 0) return;
      stream.off('data', onData);
      stream.pause();
      resolveLine(text.subarray(0, eol).toString('utf8'));
    };
    stream.on('data', onData);
    stream.once('end', () => reject(ended()));
    stream.once('error', reject);
  });
}

/** The relay: takes its plan from fd 3, says there whether the program started, then relays until it exits. */
async function execRelay(): Promise<number> {
  const { ExecError, parseRelayPlan, relayExec } = await import('../oci/exec.js');
  const channel = new Socket({ fd: 3, readable: true, writable: true });
  let reported = false;
  const report = (line: string): void => {
    if (reported) return;
    reported = true;
    channel.end(`${line}\n`);
  };
  try {
    const plan = parseRelayPlan(await firstLine(channel, () => new ExecError('exec relay: no plan')));
    return await relayExec(
      plan.target,
      plan,
      { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
      () => undefined,
      (failure) => report(failure === undefined ? EXEC_STARTED_LINE : `error: ${failure.message}`),
    );
  } catch (e) {
    report(`error: ${errorMessage(e)}`);
    return 1;
  } finally {
    process.stdin.destroy();
  }
}

/** runtime-spec's features document: what this runtime honours in a bundle. */
async function features(out: Writable): Promise<void> {
  const { KNOWN_MOUNT_OPTIONS } = await import('../oci/mount-options.js');
  out.write(
    `${JSON.stringify(
      {
        ociVersionMin: '1.0.0',
        ociVersionMax: RUNTIME_SPEC_VERSION,
        hooks: [],
        mountOptions: KNOWN_MOUNT_OPTIONS,
        linux: {
          // The VM is the isolation boundary: no host namespace, cgroup, seccomp or LSM is set up.
          namespaces: [],
          capabilities: [],
          cgroup: { v1: false, v2: false, systemd: false, systemdUser: false },
          seccomp: { enabled: false },
          apparmor: { enabled: false },
          selinux: { enabled: false },
        },
        annotations: { 'io.github.ts-vmm.vm': 'KVM', 'io.github.ts-vmm.tee': 'sev, sev-sim' },
      },
      null,
      2,
    )}\n`,
  );
}

/**
 * runc kill. With --all (runc: every process of the container), which containerd's shim sends to clean up after
 * the workload, a stopped container is not an error: its processes all lived in the VM, gone with it. SIGKILL with
 * --all also ends the VMM at once rather than through the monitor.
 */
async function kill(id: string, signal: number, options: RootOption & { all?: boolean }): Promise<void> {
  const record = await storeOf(options).live(id);
  const live = record.status === 'created' || record.status === 'running' || record.status === 'paused';
  if (!live) {
    if (options.all) return;
    throw new StateError(`container "${id}" is ${record.status}: nothing to signal`);
  }
  const signalled = signalVerified(record.pid, record.pidStartTime, signal);
  if (options.all && signal === osConstants.signals.SIGKILL && record.vmm) signalVerified(record.vmm.pid, record.vmm.startTime, signal);
  if (!signalled && !options.all) throw new StateError(`container "${id}" is stopped: nothing to signal`);
}

/**
 * Ends everything a container has and removes its directory: the monitor and the VMM, each only while it is still
 * the process recorded (pid and start time), the disk lock the monitor held, and the run's files (kept in the
 * container's directory). Nothing of the container outlives this.
 */
async function destroy(store: StateStore, id: string, record: ContainerRecord | undefined): Promise<void> {
  if (record !== undefined) {
    await killVerified(record.pid, record.pidStartTime);
    if (record.vmm) await killVerified(record.vmm.pid, record.vmm.startTime);
    if (record.diskLock !== undefined && lockHolder(record.diskLock) === String(record.pid)) await rm(record.diskLock, { force: true });
  }
  await store.remove(id);
}

function lockHolder(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

async function remove(id: string, options: RootOption & { force?: boolean }): Promise<void> {
  const store = storeOf(options);
  let record: ContainerRecord | undefined;
  try {
    record = await store.live(id);
  } catch (e) {
    // With --force, an unknown id is already deleted (runc's answer), and a directory without readable state
    // (a create that never finished, a damaged file) goes.
    if (options.force && e instanceof NoSuchContainerError) return;
    if (!(options.force && e instanceof UnreadableStateError)) throw e;
  }
  if (record !== undefined && record.status !== 'stopped' && !options.force) {
    throw new StateError(`container "${id}" is ${record.status}; stop it first (ts-vmm kill) or use --force`);
  }
  await destroy(store, id, record);
}

/**
 * Runs an action with the runtime's global options (runc's, given before or after the verb); errors become
 * one line on stderr, the same in the --log file, and exit status 1.
 */
function action<A extends unknown[]>(fn: (globals: RuntimeGlobals, ...args: A) => Promise<void>): (...args: [...A, Command]) => Promise<void> {
  return async (...args: [...A, Command]) => {
    const command = args.at(-1) as Command;
    const globals = command.optsWithGlobals<RuntimeGlobals>();
    if (globals.systemdCgroup) logToRuntimeLog(globals, 'warning', '--systemd-cgroup ignored: the container runs in a VM, which joins no host cgroup');
    logToRuntimeLog(globals, 'debug', `${command.name()} ${command.args.join(' ')}`);
    try {
      await fn(globals, ...(args.slice(0, -1) as A));
    } catch (e) {
      reportFailure(e);
      logToRuntimeLog(globals, 'error', errorMessage(e));
      process.exitCode = 1;
    }
  };
}

/** exec's options that take a value (runc's), and the runtime's global ones: the container id is the first other word. */
const EXEC_VALUED_OPTIONS = new Set([
  '-p',
  '--process',
  '--console-socket',
  '--pid-file',
  '--cwd',
  '-e',
  '--env',
  '-u',
  '--user',
  '-g',
  '--additional-gids',
  '--preserve-fds',
  '--process-label',
  '--apparmor',
  '-c',
  '--cap',
  ...VALUED_GLOBAL_OPTIONS,
]);

/** As runc reads exec: options up to the container id, then the command, options of its own and all (`sh -c ...`). */
export function rewriteArguments(argv: string[], verbIndex: number): string[] {
  if (argv[verbIndex] !== 'exec') return argv;
  for (let i = verbIndex + 1; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return argv;
    if (arg.startsWith('-')) {
      if (EXEC_VALUED_OPTIONS.has(arg)) i++;
      continue;
    }
    return argv[i + 1] === '--' ? argv : [...argv.slice(0, i + 1), '--', ...argv.slice(i + 1)];
  }
  return argv;
}

export function register(program: Command): void {
  addRuntimeGlobals(program);
  program
    .command('create')
    .description('create an OCI container: boot its VM and set it up, without starting the process')
    .argument('<id>', 'container id')
    .option('-b, --bundle <dir>', 'OCI bundle directory', '.')
    .option('--pid-file <file>', "write the container's pid (its monitor process) here")
    .option('--console-socket <path>', "Unix socket to send the terminal's pty master to (SCM_RIGHTS), for process.terminal")
    .option('--no-pivot', "accepted for runc compatibility: the root is the guest's own")
    .option('--no-new-keyring', "accepted for runc compatibility: the guest kernel's keyrings are the workload's alone")
    .option('--kernel <vmlinuz>', 'boot this kernel (needs --modules)')
    .option('--modules <dir>', "the kernel's lib/modules/<release> directory")
    .action(action((globals, id: string, options: CreateOptions) => create(id, { ...options, root: globals.root }, globals)));
  program
    .command('start')
    .description('start the process of a created container')
    .argument('<id>', 'container id')
    .action(action((globals, id: string) => start(id, globals)));
  program
    .command('state')
    .description('print the runtime-spec state of a container as JSON')
    .argument('<id>', 'container id')
    .action(action((globals, id: string) => state(id, globals, process.stdout)));
  program
    .command('kill')
    .description("send a signal to a container's process (before start: stop the container)")
    .argument('<id>', 'container id')
    .argument('[signal]', 'signal name or number', parseSignal, osConstants.signals.SIGTERM)
    .option('-a, --all', 'every process of the container (all are in its VM): a stopped container is no error; KILL ends the VM at once')
    .action(action((globals, id: string, signal: number, options: { all?: boolean }) => kill(id, signal, { ...options, root: globals.root })));
  program
    .command('delete')
    .description("delete a stopped container's state")
    .argument('<id>', 'container id')
    .option('-f, --force', 'kill the container first if it is still running')
    .action(action((globals, id: string, options: { force?: boolean }) => remove(id, { ...options, root: globals.root })));
  program
    .command('pause')
    .description("stop a running container's VM where it is")
    .argument('<id>', 'container id')
    .action(action((globals, id: string) => setPaused(id, true, globals)));
  program
    .command('resume')
    .description("let a paused container's VM go on")
    .argument('<id>', 'container id')
    .action(action((globals, id: string) => setPaused(id, false, globals)));
  program
    .command('ps')
    .description("list the container's host processes: its monitor and its VMM")
    .argument('<id>', 'container id')
    .addOption(new Option('-f, --format <format>', 'output format').choices(['table', 'json']).default('table'))
    .action(action((globals, id: string, options: { format: string }) => ps(id, { ...options, root: globals.root }, process.stdout)));
  program
    .command('exec')
    .description('run a further process in a container (its guest): the command, or a runtime-spec process file')
    .argument('<id>', 'container id')
    .argument('[command...]', 'program and arguments (without --process)')
    .option('-p, --process <file>', "the process as runtime-spec JSON (the engines' way); the other process options then do not apply")
    .option('-t, --tty', 'give the process a terminal')
    .option('--console-socket <path>', "Unix socket to send the terminal's pty master to (SCM_RIGHTS)")
    .option('-d, --detach', 'return once the process runs; its relay process (pid in --pid-file) exits with its status')
    .option('--pid-file <file>', "write the pid of the process's relay here")
    .option('--cwd <dir>', 'working directory in the container')
    .option('-e, --env <NAME=value>', 'add an environment variable (repeatable)', collect, [])
    .option('-u, --user <uid[:gid]>', 'user and group ids in the container')
    .option('-g, --additional-gids <gid>', 'an additional group id (repeatable)', collect, [])
    .option('--no-new-privs', 'set no_new_privs for the process')
    .option('--preserve-fds <n>', 'accepted for runc compatibility when 0: host descriptors do not reach the guest', '0')
    .option('--process-label <label>', 'accepted for runc compatibility: the guest has no host SELinux label')
    .option('--apparmor <profile>', 'accepted for runc compatibility: the guest has no host AppArmor profile')
    .option('-c, --cap <cap>', 'accepted for runc compatibility: the process has the capabilities its user has in the guest', collect, [])
    .action(action((globals, id: string, command: string[], options: ExecOptions) => exec(id, command, { ...options, root: globals.root }, globals)));
  program.command('oci-exec-relay', { hidden: true }).action(async () => {
    process.exitCode = await execRelay();
  });
  program
    .command('features')
    .description('print the runtime-spec features JSON: what this runtime honours')
    .action(action(() => features(process.stdout)));
  program
    .command('oci-monitor', { hidden: true })
    .argument('<id>')
    .option('--kernel <vmlinuz>')
    .option('--modules <dir>')
    .action(async (id: string, options: RunCommandOptions, command: Command) => {
      // fd 3 is the pipe to `ts-vmm create`; stdout and stderr belong to the container, so no progress goes there.
      const report = createWriteStream('', { fd: 3 });
      const [{ monitorContainer }, { runSettings }] = await Promise.all([import('../oci/monitor.js'), import('./run.js')]);
      process.exitCode = await monitorContainer(
        storeOf(command.optsWithGlobals<RuntimeGlobals>()),
        id,
        report,
        { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
        { ...runSettings(options), log: () => undefined },
      );
      process.stdin.destroy();
    });
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];
