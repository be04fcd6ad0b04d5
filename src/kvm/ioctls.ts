// KVM ioctl request numbers, computed from their C definitions and registered for the ABI test.
import { _IO, _IOR, _IOW, _IOWR, ioctl } from '../sys/abi.js';
import {
  kvmClockData,
  kvmCpuid2,
  kvmEncRegion,
  kvmFpu,
  kvmIoeventfd,
  kvmIrqLevel,
  kvmIrqfd,
  kvmLapicState,
  kvmMpState,
  kvmMsrList,
  kvmMsrs,
  kvmPitConfig,
  kvmRegs,
  kvmSregs,
  kvmUserspaceMemoryRegion,
} from './structs.js';

const KVM = 'linux/kvm.h';
const KVMIO = 0xae;
const U64 = 8;

// System (/dev/kvm) ioctls.
export const KVM_GET_API_VERSION = ioctl('KVM_GET_API_VERSION', KVM, _IO(KVMIO, 0x00));
export const KVM_CREATE_VM = ioctl('KVM_CREATE_VM', KVM, _IO(KVMIO, 0x01));
export const KVM_GET_MSR_INDEX_LIST = ioctl('KVM_GET_MSR_INDEX_LIST', KVM, _IOWR(KVMIO, 0x02, kvmMsrList.size));
export const KVM_CHECK_EXTENSION = ioctl('KVM_CHECK_EXTENSION', KVM, _IO(KVMIO, 0x03));
export const KVM_GET_VCPU_MMAP_SIZE = ioctl('KVM_GET_VCPU_MMAP_SIZE', KVM, _IO(KVMIO, 0x04));
export const KVM_GET_SUPPORTED_CPUID = ioctl('KVM_GET_SUPPORTED_CPUID', KVM, _IOWR(KVMIO, 0x05, kvmCpuid2.size));
export const KVM_GET_MSR_FEATURE_INDEX_LIST = ioctl('KVM_GET_MSR_FEATURE_INDEX_LIST', KVM, _IOWR(KVMIO, 0x0a, kvmMsrList.size));

// VM ioctls.
export const KVM_CREATE_VCPU = ioctl('KVM_CREATE_VCPU', KVM, _IO(KVMIO, 0x41));
export const KVM_SET_USER_MEMORY_REGION = ioctl('KVM_SET_USER_MEMORY_REGION', KVM, _IOW(KVMIO, 0x46, kvmUserspaceMemoryRegion.size));
export const KVM_SET_TSS_ADDR = ioctl('KVM_SET_TSS_ADDR', KVM, _IO(KVMIO, 0x47));
export const KVM_SET_IDENTITY_MAP_ADDR = ioctl('KVM_SET_IDENTITY_MAP_ADDR', KVM, _IOW(KVMIO, 0x48, U64));
export const KVM_CREATE_IRQCHIP = ioctl('KVM_CREATE_IRQCHIP', KVM, _IO(KVMIO, 0x60));
export const KVM_IRQ_LINE = ioctl('KVM_IRQ_LINE', KVM, _IOW(KVMIO, 0x61, kvmIrqLevel.size));
export const KVM_IRQFD = ioctl('KVM_IRQFD', KVM, _IOW(KVMIO, 0x76, kvmIrqfd.size));
export const KVM_CREATE_PIT2 = ioctl('KVM_CREATE_PIT2', KVM, _IOW(KVMIO, 0x77, kvmPitConfig.size));
export const KVM_IOEVENTFD = ioctl('KVM_IOEVENTFD', KVM, _IOW(KVMIO, 0x79, kvmIoeventfd.size));
export const KVM_SET_CLOCK = ioctl('KVM_SET_CLOCK', KVM, _IOW(KVMIO, 0x7b, kvmClockData.size));
export const KVM_GET_CLOCK = ioctl('KVM_GET_CLOCK', KVM, _IOR(KVMIO, 0x7c, kvmClockData.size));
export const KVM_MEMORY_ENCRYPT_OP = ioctl('KVM_MEMORY_ENCRYPT_OP', KVM, _IOWR(KVMIO, 0xba, U64));
export const KVM_MEMORY_ENCRYPT_REG_REGION = ioctl('KVM_MEMORY_ENCRYPT_REG_REGION', KVM, _IOR(KVMIO, 0xbb, kvmEncRegion.size));
export const KVM_MEMORY_ENCRYPT_UNREG_REGION = ioctl('KVM_MEMORY_ENCRYPT_UNREG_REGION', KVM, _IOR(KVMIO, 0xbc, kvmEncRegion.size));

// vCPU ioctls.
export const KVM_RUN = ioctl('KVM_RUN', KVM, _IO(KVMIO, 0x80));
export const KVM_GET_REGS = ioctl('KVM_GET_REGS', KVM, _IOR(KVMIO, 0x81, kvmRegs.size));
export const KVM_SET_REGS = ioctl('KVM_SET_REGS', KVM, _IOW(KVMIO, 0x82, kvmRegs.size));
export const KVM_GET_SREGS = ioctl('KVM_GET_SREGS', KVM, _IOR(KVMIO, 0x83, kvmSregs.size));
export const KVM_SET_SREGS = ioctl('KVM_SET_SREGS', KVM, _IOW(KVMIO, 0x84, kvmSregs.size));
export const KVM_GET_MSRS = ioctl('KVM_GET_MSRS', KVM, _IOWR(KVMIO, 0x88, kvmMsrs.size));
export const KVM_SET_MSRS = ioctl('KVM_SET_MSRS', KVM, _IOW(KVMIO, 0x89, kvmMsrs.size));
export const KVM_GET_FPU = ioctl('KVM_GET_FPU', KVM, _IOR(KVMIO, 0x8c, kvmFpu.size));
export const KVM_SET_FPU = ioctl('KVM_SET_FPU', KVM, _IOW(KVMIO, 0x8d, kvmFpu.size));
export const KVM_GET_LAPIC = ioctl('KVM_GET_LAPIC', KVM, _IOR(KVMIO, 0x8e, kvmLapicState.size));
export const KVM_SET_LAPIC = ioctl('KVM_SET_LAPIC', KVM, _IOW(KVMIO, 0x8f, kvmLapicState.size));
export const KVM_SET_CPUID2 = ioctl('KVM_SET_CPUID2', KVM, _IOW(KVMIO, 0x90, kvmCpuid2.size));
export const KVM_GET_CPUID2 = ioctl('KVM_GET_CPUID2', KVM, _IOWR(KVMIO, 0x91, kvmCpuid2.size));
export const KVM_GET_MP_STATE = ioctl('KVM_GET_MP_STATE', KVM, _IOR(KVMIO, 0x98, kvmMpState.size));
export const KVM_SET_MP_STATE = ioctl('KVM_SET_MP_STATE', KVM, _IOW(KVMIO, 0x99, kvmMpState.size));
