// OCI runtime state (runtime-spec "State"), one directory per container under a state root, as runc keeps them
// under /run/runc. The stored status is what the monitor last wrote; the live status also checks that the
// monitor process is still the one that wrote it (pid and start time), so a crashed monitor reads as stopped and
// a reused pid is never mistaken for the container.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errorMessage } from '../sys/error-message.js';
import { checkSocketPath } from '../sys/socket-path.js';

/** The runtime-spec version whose state format and lifecycle this implements. */
export const RUNTIME_SPEC_VERSION = '1.2.0';
/** Under the state root, the containers' socket directories. */
const SOCKET_DIRS = '.sockets';

/** runtime-spec's statuses; `paused` is runc's addition (its VMM is stopped with SIGSTOP). */
export type ContainerStatus = 'creating' | 'created' | 'running' | 'paused' | 'stopped';

export interface ContainerState {
  ociVersion: string;
  id: string;
  status: ContainerStatus;
  /** The monitor process (it owns the VM); 0 while creating. */
  pid: number;
  bundle: string;
  annotations: Record<string, string>;
}

/** A process the container owns, named by pid and start time so that a reused pid is never taken for it. */
export interface OwnedProcess {
  pid: number;
  /** Start time in clock ticks since boot (/proc/<pid>/stat field 22). */
  startTime: string;
}

/** Where `ts-vmm exec` reaches a container's agent: the vsock device's host socket and the guest port (or, without a port, the agent's own Unix socket). */
export interface ExecTarget {
  socket: string;
  port?: number;
}

/** What ts-vmm keeps beside the runtime-spec state. */
export interface ContainerRecord extends ContainerState {
  created: string;
  /** Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22). */
  pidStartTime?: string;
  /** The VMM process (`ts-vmm boot`) the monitor started, which `delete` ends if the monitor could not. */
  vmm?: OwnedProcess;
  /** The read-write root disk's lock file, held by the monitor's pid. */
  diskLock?: string;
  /** How to run further processes in the guest; absent when the workload takes none (a confidential image). */
  exec?: ExecTarget;
  /** The workload's exit status once stopped (128+n for a signal). */
  exitStatus?: number;
  /** Why the container stopped without an exit status. */
  failure?: string;
}

export class StateError extends Error {
  override readonly name: string = 'StateError';
}

/** runc's rule for container ids: they become directory names, so no slashes, dots-only names or empties. */
export function checkContainerId(id: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.+-]{0,1023}$/.test(id)) {
    throw new StateError(`"${id}" is not a valid container id (letters, digits and _ . + -, starting with a letter or digit)`);
  }
  return id;
}

/** `/run/ts-vmm` for root (like /run/runc), else `$XDG_RUNTIME_DIR/ts-vmm`, else a per-user temporary directory. */
export function defaultStateRoot(): string {
  if (process.getuid?.() === 0) return '/run/ts-vmm';
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'ts-vmm');
  return join(tmpdir(), `ts-vmm-${process.getuid?.() ?? 'user'}`);
}

/** Start time of a process, or undefined if there is no such process (or only its zombie). */
export function processStartTime(pid: number): string | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces and ')'; fields resume after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return undefined; // field 3: state; a zombie has finished
    return fields[19]; // field 22 overall: starttime
  } catch {
    return undefined;
  }
}

/** Whether `pid` is still the process that had `startTime`. Never true for pid 0 or negative pids. */
export function isSameProcess(pid: number, startTime: string | undefined): boolean {
  return startTime !== undefined && processStartTime(pid) === startTime;
}

/** Signals `pid` only if it is still the process with `startTime`; returns whether it was signalled. */
export function signalVerified(pid: number, startTime: string | undefined, signal: NodeJS.Signals | number): boolean {
  if (!isSameProcess(pid, startTime)) return false;
  try {
    process.kill(pid, signal);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

/** Ends a verified process with SIGKILL and waits (up to `timeoutMs`) until it is gone. */
export async function killVerified(pid: number, startTime: string | undefined, timeoutMs = 5000): Promise<void> {
  if (!signalVerified(pid, startTime, 'SIGKILL')) return;
  for (const begun = Date.now(); isSameProcess(pid, startTime); ) {
    if (Date.now() - begun > timeoutMs) throw new StateError(`process ${pid} did not end after SIGKILL`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const STATUSES: readonly ContainerStatus[] = ['creating', 'created', 'running', 'paused', 'stopped'];

/** Checks what a state file holds before anything (a pid to signal, above all) is taken from it. */
function checkRecord(value: unknown, id: string): ContainerRecord {
  const r = value as Partial<ContainerRecord> | null;
  const pidOk = (p: unknown): boolean => Number.isSafeInteger(p) && (p as number) >= 0;
  if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new Error('not a JSON object');
  if (r.id !== id) throw new Error(`it names container "${String(r.id)}"`);
  if (!STATUSES.includes(r.status as ContainerStatus)) throw new Error(`status "${String(r.status)}"`);
  if (!pidOk(r.pid)) throw new Error(`pid ${String(r.pid)}`);
  if (r.pidStartTime !== undefined && typeof r.pidStartTime !== 'string') throw new Error('pidStartTime is not a string');
  if (r.vmm !== undefined && !(pidOk(r.vmm.pid) && r.vmm.pid > 0 && typeof r.vmm.startTime === 'string')) throw new Error('vmm is not a pid and start time');
  if (r.diskLock !== undefined && typeof r.diskLock !== 'string') throw new Error('diskLock is not a path');
  const port = r.exec?.port;
  if (r.exec !== undefined && !(typeof r.exec.socket === 'string' && (port === undefined || (Number.isInteger(port) && port > 0 && port <= 0xffffffff)))) {
    throw new Error('exec is not a socket path and vsock port');
  }
  if (typeof r.bundle !== 'string') throw new Error('no bundle');
  return r as ContainerRecord;
}

/** A container directory whose state file is missing or unreadable; `delete --force` removes it. */
/** No container of that id: `delete --force` succeeds on it, as runc's does. */
export class NoSuchContainerError extends StateError {
  override readonly name = 'NoSuchContainerError';
}

export class UnreadableStateError extends StateError {
  override readonly name = 'UnreadableStateError';
}

export class StateStore {
  constructor(readonly root: string) {}

  dir(id: string): string {
    return join(this.root, checkContainerId(id));
  }

  /**
   * The container's socket directory: a short path of its own, since sun_path holds 107 bytes and an id may have
   * 1024 (Kubernetes' have 64). The run's files live there too. Not a container id: ids start with a letter or digit.
   */
  socketDir(id: string): string {
    const short = createHash('sha256').update(checkContainerId(id)).digest('hex').slice(0, 16);
    return join(this.root, SOCKET_DIRS, short);
  }

  /** Path of a socket of the container's (e.g. its control socket), checked to fit a socket address. */
  socket(id: string, name: string): string {
    return checkSocketPath(join(this.socketDir(id), name));
  }

  /** Creates the container's directory and first record; fails if the id is taken. */
  async create(record: ContainerRecord): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    try {
      await mkdir(this.dir(record.id), { mode: 0o700 });
      await mkdir(this.socketDir(record.id), { recursive: true, mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      await this.read(record.id); // a directory without readable state is reported as such
      throw new StateError(`container "${record.id}" already exists (in ${this.root})`);
    }
    await this.write(record);
  }

  async read(id: string): Promise<ContainerRecord> {
    const path = join(this.dir(id), 'state.json');
    const remedy = `ts-vmm delete --force ${id} removes it`;
    if (!existsSync(this.dir(id))) throw new NoSuchContainerError(`container "${id}" does not exist (in ${this.root})`);
    if (!existsSync(path)) throw new UnreadableStateError(`container "${id}" has no state: ${path} is missing; ${remedy}`);
    try {
      return checkRecord(JSON.parse(await readFile(path, 'utf8')), id);
    } catch (e) {
      throw new UnreadableStateError(`container "${id}" has unreadable state: ${path}: ${errorMessage(e)}; ${remedy}`);
    }
  }

  /** Replaces the record atomically, so a reader never sees half a file. */
  async write(record: ContainerRecord): Promise<void> {
    const path = join(this.dir(record.id), 'state.json');
    const partial = `${path}.${process.pid}.tmp`;
    await writeFile(partial, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    await rename(partial, path);
  }

  async remove(id: string): Promise<void> {
    await rm(this.socketDir(id), { recursive: true, force: true });
    await rm(this.dir(id), { recursive: true, force: true });
  }

  /** The record with its status corrected for a monitor that is gone. */
  async live(id: string): Promise<ContainerRecord> {
    const record = await this.read(id);
    if (record.status === 'stopped' || record.pid === 0) return record;
    if (!isSameProcess(record.pid, record.pidStartTime)) {
      return { ...record, status: 'stopped', failure: record.failure ?? 'the monitor process is gone' };
    }
    return record;
  }
}

/** The runtime-spec state document for `ts-vmm state`. */
export function publicState(record: ContainerRecord): ContainerState {
  const { ociVersion, id, status, pid, bundle, annotations } = record;
  const alive = status === 'created' || status === 'running' || status === 'paused';
  return { ociVersion, id, status, pid: alive ? pid : 0, bundle, annotations };
}
