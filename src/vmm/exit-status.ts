// How a VM run ends, and the process exit status each ending maps to.
import type { Regs } from '../kvm/types.js';

export type MachineExit =
  /** The guest asked to stop: ACPI S5 or a reset (reboot). */
  | { kind: 'guest-stopped'; request: 'poweroff' | 'reset'; detail: string }
  /** The guest cannot go on: a triple fault, a kernel panic, a failed VM entry, a KVM internal error. */
  | { kind: 'guest-failed'; reason: string; regs?: Regs }
  /** The VMM itself failed (a device or vCPU thread error). */
  | { kind: 'vmm-error'; reason: string; regs?: Regs }
  /** Whoever runs the machine stopped it (a run tearing its VM down). */
  | { kind: 'stopped'; reason: string };

export const ExitStatus = {
  guestStopped: 0,
  vmmError: 1,
  guestFailed: 2,
} as const;

export function exitStatusOf(exit: MachineExit): number {
  switch (exit.kind) {
    case 'guest-stopped':
      return ExitStatus.guestStopped;
    case 'guest-failed':
      return ExitStatus.guestFailed;
    case 'vmm-error':
    case 'stopped':
      return ExitStatus.vmmError;
  }
}

const REGISTER_ORDER: (keyof Regs)[] = [
  'rip',
  'rflags',
  'rsp',
  'rbp',
  'rax',
  'rbx',
  'rcx',
  'rdx',
  'rsi',
  'rdi',
  'r8',
  'r9',
  'r10',
  'r11',
  'r12',
  'r13',
  'r14',
  'r15',
];

/** Four registers a line, hex, fixed width. */
export function formatRegisters(regs: Regs): string {
  const cells = REGISTER_ORDER.map((r) => `${r.padStart(6)}=${regs[r].toString(16).padStart(16, '0')}`);
  const lines: string[] = [];
  for (let i = 0; i < cells.length; i += 4) lines.push(cells.slice(i, i + 4).join(' '));
  return lines.join('\n');
}
