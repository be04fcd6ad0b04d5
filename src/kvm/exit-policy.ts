// Which exits end a vCPU's run loop, and how each is told to the main thread.
import {
  KVM_INTERNAL_ERROR_DELIVERY_EV,
  KVM_INTERNAL_ERROR_EMULATION,
  KVM_INTERNAL_ERROR_SIMUL_EX,
  KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
  KVM_SYSTEM_EVENT_CRASH,
  KVM_SYSTEM_EVENT_RESET,
  KVM_SYSTEM_EVENT_SHUTDOWN,
} from './constants.js';
import type { VcpuExit, VcpuStop } from './types.js';

const hex = (n: number | bigint) => `0x${n.toString(16)}`;

const INTERNAL_ERRORS: Record<number, string> = {
  [KVM_INTERNAL_ERROR_EMULATION]: 'instruction emulation failed',
  [KVM_INTERNAL_ERROR_SIMUL_EX]: 'simultaneous exceptions',
  [KVM_INTERNAL_ERROR_DELIVERY_EV]: 'exit while delivering an event',
  [KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON]: 'unexpected hardware exit reason',
};

const SYSTEM_EVENTS: Record<number, string> = {
  [KVM_SYSTEM_EVENT_SHUTDOWN]: 'shutdown',
  [KVM_SYSTEM_EVENT_RESET]: 'reset',
  [KVM_SYSTEM_EVENT_CRASH]: 'crash',
};

/**
 * The stop an exit means, or undefined for exits the loop just resumes after (I/O is dispatched before
 * this is asked; `intr` and an open interrupt window need nothing from a VMM with an in-kernel irqchip).
 */
export function stopForExit(exit: VcpuExit, vcpu: number): VcpuStop | undefined {
  const at = `vCPU ${vcpu}`;
  switch (exit.kind) {
    case 'io':
    case 'mmio':
    case 'intr':
    case 'irq-window-open':
      return undefined;
    case 'hlt':
      return { vcpu, reason: 'hlt', message: `${at}: halted (KVM_EXIT_HLT)` };
    case 'shutdown':
      return { vcpu, reason: 'shutdown', message: `${at}: shutdown (triple fault or reset request, KVM_EXIT_SHUTDOWN)` };
    case 'system-event':
      return {
        vcpu,
        reason: 'system-event',
        systemEvent: exit.type,
        message: `${at}: system event ${SYSTEM_EVENTS[exit.type] ?? exit.type} (KVM_EXIT_SYSTEM_EVENT)`,
      };
    case 'fail-entry':
      return {
        vcpu,
        reason: 'fail-entry',
        message: `${at}: VM entry failed on host CPU ${exit.cpu}, hardware reason ${hex(exit.hardwareReason)} (KVM_EXIT_FAIL_ENTRY)`,
      };
    case 'internal-error':
      return {
        vcpu,
        reason: 'internal-error',
        message: `${at}: ${INTERNAL_ERRORS[exit.suberror] ?? `suberror ${exit.suberror}`} (KVM_EXIT_INTERNAL_ERROR${exit.data.length ? `, data ${exit.data.map(hex).join(' ')}` : ''})`,
      };
    case 'exception':
      return { vcpu, reason: 'unhandled-exit', message: `${at}: exception ${exit.exception}, error code ${hex(exit.errorCode)} (KVM_EXIT_EXCEPTION)` };
    case 'unknown':
      return { vcpu, reason: 'unhandled-exit', message: `${at}: unhandled exit reason ${exit.reason}, hardware reason ${hex(exit.hardwareReason)}` };
  }
}
