// How a command ends on a failure of its own: one line on stderr and the exit status docker and podman use. Kept
// apart so that the runtime's light verbs (state, kill, delete) load nothing more to report one.

/** Exit status for a failure of ts-vmm or of the VM rather than of the workload (docker and podman use 125 too). */
export const RUN_FAILED = 125;

/** Reports an error in one line (VM failures add the last console lines) and returns the exit status. */
export function reportFailure(e: unknown): number {
  if (!(e instanceof Error)) throw e;
  process.stderr.write(`ts-vmm: ${e.message}\n`);
  return RUN_FAILED;
}
