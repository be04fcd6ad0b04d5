// `ts-vmm run` from bundle to exit status: read and check the bundle, build (or find) the root disk and the
// initramfs, boot the VM, wait for the guest agent, run the workload with its I/O and signals, tear down.
// The two halves (prepare + boot, then run) are separate so `ts-vmm create`/`start` can stop in between.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { ensureBusybox, type Log } from '../assets/debian.js';
import { readBundleConfig, type BundleConfig } from './bundle-config.js';
import { checkEntrypoint } from './entrypoint.js';
import { ensureGuestAgent } from './guest-agent.js';
import { AGENT_PORT, EXEC_PORT, processWords } from './guest-init.js';
import { ensureBaseInitramfs, writeRunInitrd } from './guest-initramfs.js';
import { chooseKernel, type GuestKernel } from './kernel-choice.js';
import { runCacheDir } from './paths.js';
import { lockFile, prepareRootDisk } from './root-disk.js';
import { FORWARDED_SIGNALS, shellStatus } from './agent-protocol.js';
import { RUN_CMDLINE, type RunningVm, type VmLauncher, type VmRequest } from './vm-request.js';
import { WorkloadIo } from './workload-io.js';
import type { ExecTarget } from './runtime-state.js';
import { errorMessage } from '../sys/error-message.js';

/** The guest's vsock context id; any value from 3 up works, each VM has its own device. */
export const GUEST_CID = 3;
/** How long a workload has to exit after a forwarded SIGINT/SIGTERM before the VM is torn down. */
export const STOP_GRACE_MS = 10_000;
/** How long the guest has to power off after reporting the exit status. */
export const POWEROFF_GRACE_MS = 3_000;
/** How long the guest has from boot to the agent's READY (the lab's TCG is slow, hence generous). */
export const READY_TIMEOUT_MS = 120_000;
const CONSOLE_TAIL_BYTES = 16 * 1024;
const LATE_EXIT_MS = 1_000;

/** `promise`'s value, or undefined once `ms` have passed; the timer never outlives the wait (nor keeps ts-vmm alive). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<undefined>((resolve) => (timer = setTimeout(resolve, ms, undefined)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** A failure of ts-vmm or the VM (not of the workload): reported in one line, exit status 125. */
export class RunError extends Error {
  override readonly name = 'RunError';
}

export interface RunSettings {
  kernel?: Partial<GuestKernel>;
  /** Progress of long steps (downloads, disk and initramfs builds). */
  log: Log;
  /** Also copy the guest console here (kernel log, init errors). */
  consoleOutput?: (bytes: Uint8Array) => void;
  /** Where the run's directory (initrd, vsock sockets) is made; the system's temporary directory by default. */
  scratchDir?: string;
  /** Told as each step of the run is done (`ts-vmm run --timings`). */
  mark?: (step: string) => void;
}

export interface PreparedRun {
  /** The process the agent is sent (none when a confidential image names its own), and whether it has a terminal. */
  process: { words: string[]; terminal: boolean };
  /**
   * A local guest owner's side of a measured launch: settles once it has answered the measurement, rejects when it
   * refuses to release the secret. Given a promise that settles if the VM stops first.
   */
  owner?: (stopped: Promise<unknown>) => Promise<void>;
  request: Omit<VmRequest, 'consoleOutput'>;
  /** The Unix socket the agent's vsock connection arrives on. */
  agentSocket: string;
  /** Where `ts-vmm exec` reaches the agent: the vsock device's host socket and the guest port (none: no exec). */
  exec?: ExecTarget;
  /** The read-write root disk's lock file, held by this process until cleanup. */
  diskLock?: string;
  /** Removes the run's temporary files and releases the disk lock. */
  cleanup(): Promise<void>;
}

/**
 * Reads and checks the bundle (config.json, its rootfs, the entrypoint). Every command that runs a bundle calls
 * this first, so a bad bundle is reported before anything is compiled, fetched, built or booted.
 */
export function checkBundle(bundleDir: string, log: Log): BundleConfig {
  const config = readBundleConfig(bundleDir);
  for (const warning of config.warnings) log(`warning: ${config.configPath}: ${warning}`);
  checkEntrypoint(config);
  return config;
}

/** Reads the bundle and builds what the VM boots from; nothing is written into the bundle. */
export async function prepareRun(bundleDir: string, settings: RunSettings): Promise<PreparedRun> {
  const mark = settings.mark ?? (() => undefined);
  const config = checkBundle(bundleDir, settings.log);
  mark('bundle read and checked');
  const cache = runCacheDir();
  const kernel = await chooseKernel(settings.kernel ?? {}, { log: settings.log });
  const busybox = await ensureBusybox({ log: settings.log });
  const agent = await ensureGuestAgent(cache, settings.log);
  mark('kernel, busybox and guest agent found');
  const base = await ensureBaseInitramfs({ modulesDir: kernel.modulesDir, busybox: busybox.path, agent }, cache, settings.log);
  mark('initramfs base ready');
  const disk = await prepareRootDisk(config, { cacheDir: cache, log: settings.log });
  mark(disk.built ? 'root disk built' : 'root disk found');
  settings.log(`root disk: ${disk.path}${disk.readonly ? ' (read-only)' : ''}`);
  if (disk.staleWarning) settings.log(`warning: ${disk.staleWarning}`);
  const releaseDisk = disk.readonly ? async () => undefined : await lockFile(`${disk.path}.lock`);
  const runDir = await mkdtemp(join(settings.scratchDir ?? tmpdir(), 'ts-vmm-run-'));
  const cleanup = async (): Promise<void> => {
    await rm(runDir, { recursive: true, force: true });
    await releaseDisk();
  };
  try {
    const initrd = await writeRunInitrd(base, config, runDir);
    mark("the run's initramfs written");
    const udsPath = join(runDir, 'vsock');
    return {
      process: { words: processWords(config.process), terminal: config.process.terminal },
      request: {
        kernel: kernel.vmlinuz,
        initrd,
        cmdline: RUN_CMDLINE,
        cpus: config.vm.cpus,
        memoryMiB: config.vm.memoryMiB,
        disks: [{ path: disk.path, readonly: disk.readonly }],
        vsock: { cid: GUEST_CID, udsPath },
      },
      agentSocket: `${udsPath}_${AGENT_PORT}`,
      exec: { socket: udsPath, port: EXEC_PORT },
      ...(disk.readonly ? {} : { diskLock: `${disk.path}.lock` }),
      cleanup,
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

export interface Stdio {
  stdin: Readable | undefined;
  stdout: Writable;
  stderr: Writable;
}

/** A VM whose agent is connected and waiting to start the workload. */
export interface BootedWorkload {
  prepared: PreparedRun;
  io: WorkloadIo;
  vm: RunningVm;
  consoleTail(): string;
  mark: (step: string) => void;
}

function consoleKeeper(copy?: (bytes: Uint8Array) => void): { output: (bytes: Uint8Array) => void; tail: () => string } {
  let kept = Buffer.alloc(0);
  return {
    output: (bytes) => {
      copy?.(bytes);
      kept = Buffer.concat([kept, bytes]);
      if (kept.length > CONSOLE_TAIL_BYTES) kept = kept.subarray(kept.length - CONSOLE_TAIL_BYTES);
    },
    tail: () =>
      kept
        .toString('utf8')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .slice(-15)
        .join('\n'),
  };
}

/**
 * Describes a VM that ended early: in one line when the guest's init said why (its `ts-vmm-init:` line), else with
 * the console lines that may tell.
 */
function earlyEnd(what: string, reason: string, tail: string): RunError {
  const initSaid = /^ts-vmm-init: (.*)$/m.exec(tail)?.[1];
  if (initSaid !== undefined) return new RunError(`${what}: ${initSaid}`);
  return new RunError(`${what}: ${reason}${tail ? `; last console lines:\n${tail}` : ''}`);
}

/** Boots the VM and waits until its agent has set up the container and is ready to start the process. */
export async function bootWorkload(prepared: PreparedRun, launch: VmLauncher, stdio: Stdio, settings: RunSettings): Promise<BootedWorkload> {
  const mark = settings.mark ?? (() => undefined);
  let consoleSeen = false;
  const console = consoleKeeper((bytes) => {
    if (!consoleSeen) mark('first guest console output');
    consoleSeen = true;
    settings.consoleOutput?.(bytes);
  });
  const io = await WorkloadIo.listen(prepared.agentSocket, stdio, (message) => stdio.stderr.write(`ts-vmm: guest: ${message}\n`));
  let vm: RunningVm;
  try {
    vm = await launch({ ...prepared.request, consoleOutput: console.output });
  } catch (e) {
    io.close();
    throw e;
  }
  mark('VM launched');
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      io.whenReady(),
      ...(prepared.owner ? [prepared.owner(vm.exited).then(() => new Promise<never>(() => undefined))] : []),
      vm.exited.then((end) => {
        throw earlyEnd('the VM stopped before the guest agent started', end.reason, console.tail());
      }),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(earlyEnd('the guest agent did not start', `no connection within ${READY_TIMEOUT_MS / 1000} s`, console.tail())),
          READY_TIMEOUT_MS,
        );
      }),
    ]);
  } catch (e) {
    io.close();
    vm.stop();
    await vm.exited;
    throw e instanceof RunError ? e : earlyEnd('the guest agent failed', errorMessage(e), console.tail());
  } finally {
    clearTimeout(timer);
  }
  mark('guest agent connected');
  return { prepared, io, vm, consoleTail: console.tail, mark };
}

/**
 * Starts the workload and returns its exit status (128+n for a signal). Signals to ts-vmm go to the workload; if
 * it has not exited STOP_GRACE_MS after the first one, or at a second SIGINT/SIGTERM, the VM is torn down and the
 * status is 128 + that signal. The VM is always stopped and released before this returns.
 */
export async function runWorkload(booted: BootedWorkload, stdio: Stdio): Promise<number> {
  const { io, vm, prepared } = booted;
  const terminal = prepared.process.terminal;
  const stdin = stdio.stdin as (Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => void }) | undefined;
  const stdout = stdio.stdout as Writable & { isTTY?: boolean; rows?: number; columns?: number };
  const raw = terminal && stdin?.isTTY === true && typeof stdin.setRawMode === 'function';
  let forced: number | undefined;
  let deadline: NodeJS.Timeout | undefined;
  let tearDown!: (status: number) => void;
  const tornDown = new Promise<number>((resolve) => {
    tearDown = resolve;
  });
  let workloadEnded = false;
  const onSignal = (name: NodeJS.Signals): void => {
    // Once the workload has exited there is nobody to forward to (and the VM's own vCPU kicks are SIGUSR2s).
    if (workloadEnded) return;
    const number = osConstants.signals[name];
    io.signal(number);
    const finalSignal = deadline !== undefined && (name === 'SIGINT' || name === 'SIGTERM');
    if (deadline === undefined || finalSignal) {
      clearTimeout(deadline);
      deadline = setTimeout(
        () => {
          forced = 128 + number;
          tearDown(forced);
        },
        finalSignal ? 0 : STOP_GRACE_MS,
      );
    }
  };
  // A new pty (create --console-socket) has no size until the engine sets one.
  const onResize = (): void => io.resize(stdout.rows || 24, stdout.columns || 80);
  for (const s of FORWARDED_SIGNALS) process.on(s, onSignal);
  if (terminal && stdout.isTTY) stdout.on('resize', onResize);
  if (raw) stdin!.setRawMode!(true);
  try {
    io.start(prepared.process.words, terminal && stdout.isTTY ? { rows: stdout.rows || 24, columns: stdout.columns || 80 } : undefined);
    booted.mark('workload sent');
    io.whenStarted().then(
      () => booted.mark('workload started'),
      () => undefined,
    );
    io.whenOutput().then(
      () => booted.mark('first workload output'),
      () => undefined,
    );
    io.whenExited().then(
      () => {
        workloadEnded = true;
      },
      () => undefined,
    );
    const status = await Promise.race([
      io.whenExited().then(shellStatus),
      tornDown,
      vm.exited.then(async (end) => {
        // The EXIT frame and the power-off travel separate paths; give the frame a moment to arrive.
        const late = await within(
          io.whenExited().then(shellStatus, () => undefined),
          LATE_EXIT_MS,
        );
        if (late !== undefined) return late;
        throw earlyEnd('the VM stopped before the workload reported its exit status', end.reason, booted.consoleTail());
      }),
    ]);
    booted.mark('workload exited');
    if (forced === undefined) await within(vm.exited, POWEROFF_GRACE_MS);
    return status;
  } catch (e) {
    throw e instanceof RunError ? e : earlyEnd('lost the workload', errorMessage(e), booted.consoleTail());
  } finally {
    clearTimeout(deadline);
    for (const s of FORWARDED_SIGNALS) process.off(s, onSignal);
    stdout.off('resize', onResize);
    if (raw) stdin!.setRawMode!(false);
    io.close();
    vm.stop();
    await vm.exited;
    booted.mark('VM gone');
    await prepared.cleanup();
  }
}

/** bootWorkload + runWorkload of a prepared run; its files are cleaned up however it ends. */
export async function runPrepared(prepared: PreparedRun, launch: VmLauncher, stdio: Stdio, settings: RunSettings): Promise<number> {
  let booted: BootedWorkload;
  try {
    booted = await bootWorkload(prepared, launch, stdio, settings);
  } catch (e) {
    await prepared.cleanup();
    throw e;
  }
  return runWorkload(booted, stdio);
}
