// Runs one ts-vmm command inside the lab as if it ran here: the host paths it names are carried in at
// the same absolute paths, it starts in the same working directory, and its stdout, stderr and exit
// status are relayed. Used by `ts-vmm lab` and by commands that need KVM on a host without it.
// The guest's files are discarded at power-off: only output comes back.
import { resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { LAB_PATHS } from './image.js';
import { runInLab, type LabOptions } from './run.js';

export interface RelayOptions extends Pick<LabOptions, 'timeoutMs' | 'idleStallMs' | 'memoryMiB' | 'cpus' | 'log' | 'env' | 'engines'> {
  /** Host files or directories the command reads, carried into the guest at the same path. */
  readonly include?: readonly string[];
  /** Run `argv` as a program instead of as ts-vmm arguments. */
  readonly exec?: boolean;
  /** Relay the guest's serial console (kernel log) to stderr too. */
  readonly showConsole?: boolean;
  /** After the command, copy this guest file (e.g. a log it wrote) to `to`, if the command made it. */
  readonly copyOut?: { readonly guestPath: string; readonly to: Writable };
}

/** Runs `argv` (ts-vmm arguments, e.g. `['run', 'bundle']`) in the lab; resolves to its exit status. */
export async function relayInLab(argv: readonly string[], options: RelayOptions = {}): Promise<number> {
  if (argv.length === 0) throw new Error('nothing to run in the lab: give a command after --');
  const program = options.exec ? argv : ['node', `${LAB_PATHS.project}/bin/ts-vmm.js`, ...argv];
  const cwd = process.cwd();
  const result = await runInLab({
    ...options,
    // The guest has an empty tree where the host's working directory was, unless it is included.
    commands: [
      { argv: ['/bin/sh', '-c', 'mkdir -p "$1" && cd "$1" && shift && exec "$@"', 'sh', cwd, ...program], cwd: '/' },
      // Exits 0 whatever the command did, so the lab's status stays the command's.
      ...(options.copyOut ? [{ argv: ['/bin/sh', '-c', '[ ! -e "$1" ] || cat "$1"', 'sh', options.copyOut.guestPath], cwd: '/' }] : []),
    ],
    files: (options.include ?? []).map((path) => ({ guestPath: resolve(path), hostPath: resolve(path) })),
    onOutput: (index, stream, data) => {
      if (index === 0) (stream === 'stdout' ? process.stdout : process.stderr).write(data);
      else if (stream === 'stdout') options.copyOut?.to.write(data);
      else process.stderr.write(data);
    },
    ...(options.showConsole ? { onConsole: (data: Buffer) => process.stderr.write(data) } : {}),
  });
  return result.exitStatus;
}
