// KVM constants (exit reasons, capabilities, flags), registered so the ABI test checks each value.
import { constant } from '../sys/abi.js';

const KVM = 'linux/kvm.h';

export const KVM_API_VERSION = constant('KVM_API_VERSION', KVM, 12);

// Exit reasons (kvm_run.exit_reason).
export const KVM_EXIT_UNKNOWN = constant('KVM_EXIT_UNKNOWN', KVM, 0);
export const KVM_EXIT_EXCEPTION = constant('KVM_EXIT_EXCEPTION', KVM, 1);
export const KVM_EXIT_IO = constant('KVM_EXIT_IO', KVM, 2);
export const KVM_EXIT_HLT = constant('KVM_EXIT_HLT', KVM, 5);
export const KVM_EXIT_MMIO = constant('KVM_EXIT_MMIO', KVM, 6);
export const KVM_EXIT_IRQ_WINDOW_OPEN = constant('KVM_EXIT_IRQ_WINDOW_OPEN', KVM, 7);
export const KVM_EXIT_SHUTDOWN = constant('KVM_EXIT_SHUTDOWN', KVM, 8);
export const KVM_EXIT_FAIL_ENTRY = constant('KVM_EXIT_FAIL_ENTRY', KVM, 9);
export const KVM_EXIT_INTR = constant('KVM_EXIT_INTR', KVM, 10);
export const KVM_EXIT_INTERNAL_ERROR = constant('KVM_EXIT_INTERNAL_ERROR', KVM, 17);
export const KVM_EXIT_SYSTEM_EVENT = constant('KVM_EXIT_SYSTEM_EVENT', KVM, 24);

export const KVM_EXIT_IO_IN = constant('KVM_EXIT_IO_IN', KVM, 0);
export const KVM_EXIT_IO_OUT = constant('KVM_EXIT_IO_OUT', KVM, 1);

export const KVM_INTERNAL_ERROR_EMULATION = constant('KVM_INTERNAL_ERROR_EMULATION', KVM, 1);
export const KVM_INTERNAL_ERROR_SIMUL_EX = constant('KVM_INTERNAL_ERROR_SIMUL_EX', KVM, 2);
export const KVM_INTERNAL_ERROR_DELIVERY_EV = constant('KVM_INTERNAL_ERROR_DELIVERY_EV', KVM, 3);
export const KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = constant('KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON', KVM, 4);

export const KVM_SYSTEM_EVENT_SHUTDOWN = constant('KVM_SYSTEM_EVENT_SHUTDOWN', KVM, 1);
export const KVM_SYSTEM_EVENT_RESET = constant('KVM_SYSTEM_EVENT_RESET', KVM, 2);
export const KVM_SYSTEM_EVENT_CRASH = constant('KVM_SYSTEM_EVENT_CRASH', KVM, 3);

// Capabilities (KVM_CHECK_EXTENSION).
export const KVM_CAP_IRQCHIP = constant('KVM_CAP_IRQCHIP', KVM, 0);
export const KVM_CAP_USER_MEMORY = constant('KVM_CAP_USER_MEMORY', KVM, 3);
export const KVM_CAP_SET_TSS_ADDR = constant('KVM_CAP_SET_TSS_ADDR', KVM, 4);
export const KVM_CAP_EXT_CPUID = constant('KVM_CAP_EXT_CPUID', KVM, 7);
export const KVM_CAP_NR_VCPUS = constant('KVM_CAP_NR_VCPUS', KVM, 9);
export const KVM_CAP_NR_MEMSLOTS = constant('KVM_CAP_NR_MEMSLOTS', KVM, 10);
export const KVM_CAP_IRQFD = constant('KVM_CAP_IRQFD', KVM, 32);
export const KVM_CAP_PIT2 = constant('KVM_CAP_PIT2', KVM, 33);
export const KVM_CAP_IOEVENTFD = constant('KVM_CAP_IOEVENTFD', KVM, 36);
export const KVM_CAP_SET_IDENTITY_MAP_ADDR = constant('KVM_CAP_SET_IDENTITY_MAP_ADDR', KVM, 37);
export const KVM_CAP_ADJUST_CLOCK = constant('KVM_CAP_ADJUST_CLOCK', KVM, 39);
export const KVM_CAP_MAX_VCPUS = constant('KVM_CAP_MAX_VCPUS', KVM, 66);
export const KVM_CAP_TSC_DEADLINE_TIMER = constant('KVM_CAP_TSC_DEADLINE_TIMER', KVM, 72);
export const KVM_CAP_IMMEDIATE_EXIT = constant('KVM_CAP_IMMEDIATE_EXIT', KVM, 136);

// Flags.
export const KVM_MEM_READONLY = constant('KVM_MEM_READONLY', KVM, 1 << 1);
export const KVM_IRQFD_FLAG_DEASSIGN = constant('KVM_IRQFD_FLAG_DEASSIGN', KVM, 1 << 0);
export const KVM_IOEVENTFD_FLAG_DATAMATCH = constant('KVM_IOEVENTFD_FLAG_DATAMATCH', KVM, 1 << 0);
export const KVM_IOEVENTFD_FLAG_PIO = constant('KVM_IOEVENTFD_FLAG_PIO', KVM, 1 << 1);
export const KVM_IOEVENTFD_FLAG_DEASSIGN = constant('KVM_IOEVENTFD_FLAG_DEASSIGN', KVM, 1 << 2);
export const KVM_PIT_SPEAKER_DUMMY = constant('KVM_PIT_SPEAKER_DUMMY', KVM, 1);

export const KVM_MP_STATE_RUNNABLE = constant('KVM_MP_STATE_RUNNABLE', KVM, 0);
export const KVM_MP_STATE_UNINITIALIZED = constant('KVM_MP_STATE_UNINITIALIZED', KVM, 1);
export const KVM_MP_STATE_INIT_RECEIVED = constant('KVM_MP_STATE_INIT_RECEIVED', KVM, 2);
export const KVM_MP_STATE_HALTED = constant('KVM_MP_STATE_HALTED', KVM, 3);
export const KVM_MP_STATE_SIPI_RECEIVED = constant('KVM_MP_STATE_SIPI_RECEIVED', KVM, 4);
