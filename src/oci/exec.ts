// `ts-vmm exec`: a further process in a running container's guest. The agent takes it on its exec port, in a forked
// session of its own that speaks the container process's frames; this side is the process's relay, whose exit
// status is the process's (128+n for a signal), so an engine waiting for the pid it was given (containerd's shim,
// conmon) gets that status, and whose signals go to the process.
import { constants as osConstants } from 'node:os';
import { readFileSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { BundleError, parseProcessSpec, readBundleConfig, type ProcessSpec } from './bundle-config.js';
import { FORWARDED_SIGNALS, ProtocolError, shellStatus } from './agent-protocol.js';
import { processWords } from './guest-init.js';
import type { ExecTarget } from './runtime-state.js';
import { WorkloadIo, type AgentErrorHandler } from './workload-io.js';
import { errorMessage } from '../sys/error-message.js';

/** What runc exec's command line changes in the container's own process when no --process file is given. */
export interface ExecChanges {
  args: string[];
  env: string[];
  cwd?: string;
  user?: { uid: number; gid: number };
  additionalGids: number[];
  terminal: boolean;
  noNewPrivileges: boolean;
}

/** runc's rule: a --process file is the whole process; otherwise the bundle's process with the command line's changes. */
export function execProcess(bundle: string, processFile: string | undefined, changes: ExecChanges, warn: (message: string) => void): ProcessSpec {
  if (processFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(processFile, 'utf8');
    } catch (e) {
      throw new BundleError(`--process ${processFile}: ${errorMessage(e)}`);
    }
    const { process, warnings } = parseProcessSpec(text, processFile);
    for (const w of warnings) warn(`warning: ${processFile}: ${w}`);
    return changes.terminal ? { ...process, terminal: true } : process;
  }
  if (changes.args.length === 0 || changes.args[0] === '') throw new BundleError('exec: no command given (and no --process file)');
  const base = readBundleConfig(bundle).process;
  for (const e of changes.env) if (e.indexOf('=') <= 0 || e.includes('\0')) throw new BundleError(`--env "${e}" is not NAME=value`);
  return {
    ...base,
    args: changes.args,
    env: [...base.env, ...changes.env],
    cwd: changes.cwd ?? base.cwd,
    ...(changes.user ?? {}),
    additionalGids: changes.additionalGids.length > 0 ? changes.additionalGids : base.additionalGids,
    terminal: changes.terminal,
    noNewPrivileges: changes.noNewPrivileges || base.noNewPrivileges,
  };
}

/** runc's -u: UID or UID:GID, numeric (the guest's user database is the container's, not the host's). */
export function parseExecUser(text: string): { uid: number; gid: number } {
  const m = /^([0-9]{1,10})(?::([0-9]{1,10}))?$/.exec(text);
  const uid = Number(m?.[1]);
  const gid = Number(m?.[2] ?? 0);
  if (!m || uid > 0xffffffff || gid > 0xffffffff) throw new BundleError(`--user "${text}" is not UID or UID:GID (numbers)`);
  return { uid, gid };
}

export interface ExecStdio {
  stdin: Readable | undefined;
  stdout: Writable;
  stderr: Writable;
}

/** The status of a process the container took with it: it ended when its VM did, as if by SIGKILL. */
const ENDED_WITH_CONTAINER = 128 + osConstants.signals.SIGKILL;

/**
 * Runs `words` (processWords' form) through the agent's exec port and relays its I/O until it exits; returns its
 * exit status. `started` is told once whether the program could be started (undefined) or why not.
 */
export async function relayExec(
  target: ExecTarget,
  process: { words: string[]; terminal: boolean },
  stdio: ExecStdio,
  onAgentError: AgentErrorHandler,
  started: (failure: Error | undefined) => void,
): Promise<number> {
  let io: WorkloadIo;
  try {
    io = await WorkloadIo.connect(target.socket, target.port, stdio, onAgentError);
    await io.whenReady();
  } catch (e) {
    throw new ExecError(`cannot reach the container's guest agent: ${errorMessage(e)}`);
  }
  const stdin = stdio.stdin as (Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => void }) | undefined;
  const stdout = stdio.stdout as Writable & { isTTY?: boolean; rows?: number; columns?: number };
  const sized = process.terminal && stdout.isTTY === true;
  const raw = process.terminal && stdin?.isTTY === true && typeof stdin.setRawMode === 'function';
  const size = () => ({ rows: stdout.rows || 24, columns: stdout.columns || 80 });
  const onSignal = (name: NodeJS.Signals): void => io.signal(osConstants.signals[name]);
  const onResize = (): void => io.resize(size().rows, size().columns);
  for (const s of FORWARDED_SIGNALS) globalThis.process.on(s, onSignal);
  if (sized) stdout.on('resize', onResize);
  if (raw) stdin!.setRawMode!(true);
  try {
    io.start(process.words, sized ? size() : undefined);
    started(
      await io.whenStarted().then(
        () => undefined,
        (e: unknown) => e as Error,
      ),
    );
    try {
      return shellStatus(await io.whenExited());
    } catch (e) {
      if (e instanceof ProtocolError && /disconnected without/.test(e.message)) return ENDED_WITH_CONTAINER;
      throw new ExecError(errorMessage(e));
    }
  } finally {
    for (const s of FORWARDED_SIGNALS) globalThis.process.off(s, onSignal);
    stdout.off('resize', onResize);
    if (raw) stdin!.setRawMode!(false);
    io.close();
  }
}

export class ExecError extends Error {
  override readonly name = 'ExecError';
}

/** The detached relay's instructions, passed over its private channel (the words may hold secrets: not argv). */
export interface ExecRelayPlan {
  target: ExecTarget;
  words: string[];
  terminal: boolean;
}

export function parseRelayPlan(text: string): ExecRelayPlan {
  const plan = JSON.parse(text) as Partial<ExecRelayPlan>;
  const ok =
    typeof plan.target?.socket === 'string' &&
    (plan.target.port === undefined || Number.isInteger(plan.target.port)) &&
    Array.isArray(plan.words) &&
    plan.words.every((w) => typeof w === 'string') &&
    typeof plan.terminal === 'boolean';
  if (!ok) throw new ExecError('exec relay: malformed plan');
  return plan as ExecRelayPlan;
}

export const toPlan = (target: ExecTarget, process: ProcessSpec): ExecRelayPlan => ({ target, words: processWords(process), terminal: process.terminal });
