// runc's global options, which container engines pass before every verb (`ts-vmm --root R --log F
// --log-format json create ...`): where state lives, and where errors go besides stderr. containerd reads
// the log file (json) to tell its user why the runtime failed; without it the user sees only "unable to
// retrieve OCI runtime error".
import { appendFileSync } from 'node:fs';
import { Option, type Command } from 'commander';

export interface RuntimeGlobals {
  root?: string;
  log?: string;
  logFormat: 'text' | 'json';
  debug?: boolean;
  systemdCgroup?: boolean;
  rootless?: string;
}

/** Global options that take a value: the verb is the first word after them (see cli/main.ts). */
export const VALUED_GLOBAL_OPTIONS = ['--root', '--log', '--log-format', '--rootless'];

export function addRuntimeGlobals(program: Command): void {
  program
    .option('--root <dir>', 'directory holding container state (default: /run/ts-vmm for root, else $XDG_RUNTIME_DIR/ts-vmm)')
    .option('--log <file>', 'also write errors (and with --debug, progress) to this file, as runc does')
    .addOption(new Option('--log-format <format>', 'format of --log').choices(['text', 'json']).default('text'))
    .option('--debug', 'log progress, not only errors')
    .option('--systemd-cgroup', 'accepted for runc compatibility: a VM joins no host cgroup')
    .option('--rootless <value>', 'accepted for runc compatibility (true, false or auto)');
}

/** A runc-style log line in `--log`, if one was given; `level` as logrus names them. */
export function logToRuntimeLog(globals: RuntimeGlobals, level: 'error' | 'warning' | 'debug', message: string): void {
  if (globals.log === undefined || (level === 'debug' && !globals.debug)) return;
  const time = new Date().toISOString();
  const line = globals.logFormat === 'json' ? JSON.stringify({ level, msg: message, time }) : `time="${time}" level=${level} msg=${JSON.stringify(message)}`;
  try {
    appendFileSync(globals.log, `${line}\n`, { mode: 0o600 });
  } catch {
    // The log is a copy of what stderr says; an unwritable log must not hide the error itself.
  }
}
