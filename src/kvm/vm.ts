// A KVM virtual machine (the fd KVM_CREATE_VM returned): memory slots, the in-kernel interrupt
// controllers and timer, interrupt and notification plumbing, and vCPU creation.
import type { GuestMemory } from '../memory/guest-memory.js';
import { decodeExact, encodeExact } from '../sys/abi.js';
import {
  KVM_IOEVENTFD_FLAG_DATAMATCH,
  KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IOEVENTFD_FLAG_PIO,
  KVM_IRQFD_FLAG_DEASSIGN,
  KVM_PIT_SPEAKER_DUMMY,
} from './constants.js';
import type { EventFd } from '../sys/eventfd.js';
import {
  KVM_CHECK_EXTENSION,
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_PIT2,
  KVM_CREATE_VCPU,
  KVM_GET_CLOCK,
  KVM_IOEVENTFD,
  KVM_IRQFD,
  KVM_IRQ_LINE,
  KVM_MEMORY_ENCRYPT_OP,
  KVM_MEMORY_ENCRYPT_REG_REGION,
  KVM_MEMORY_ENCRYPT_UNREG_REGION,
  KVM_SET_IDENTITY_MAP_ADDR,
  KVM_SET_TSS_ADDR,
  KVM_SET_USER_MEMORY_REGION,
} from './ioctls.js';
import { kvmClockData, kvmEncRegion, kvmIoeventfd, kvmIrqLevel, kvmIrqfd, kvmPitConfig, kvmUserspaceMemoryRegion } from './structs.js';
import { close, ioctlBuffer, ioctlValue } from '../sys/sys.js';
import type { ClockData, IoEventSpec, MemorySlot, VirtualMachine } from './types.js';
import { Vcpu } from './vcpu.js';

const PAGE = 4096;

export class Vm implements VirtualMachine {
  private readonly irqLevel = new Uint8Array(kvmIrqLevel.size);
  private readonly irqLevelView = new DataView(this.irqLevel.buffer);

  constructor(
    readonly fd: number,
    private readonly vcpuMmapSize: number,
  ) {}

  checkExtension(capability: number): number {
    return ioctlValue(this.fd, 'KVM_CHECK_EXTENSION (VM)', KVM_CHECK_EXTENSION, capability);
  }

  setUserMemoryRegion({ slot, guestAddress, size, hostAddress, flags = 0 }: MemorySlot): void {
    if (guestAddress % PAGE !== 0 || size % PAGE !== 0 || hostAddress % BigInt(PAGE) !== 0n) {
      throw new Error(`memory slot ${slot}: guest 0x${guestAddress.toString(16)}, size 0x${size.toString(16)} and host address must be page-aligned`);
    }
    const buf = encodeExact(kvmUserspaceMemoryRegion, {
      slot,
      flags,
      guest_phys_addr: BigInt(guestAddress),
      memory_size: BigInt(size),
      userspace_addr: hostAddress,
    });
    ioctlBuffer(this.fd, 'KVM_SET_USER_MEMORY_REGION', KVM_SET_USER_MEMORY_REGION, buf, {
      EEXIST: `slot ${slot} at 0x${guestAddress.toString(16)} overlaps another slot`,
      EINVAL: `slot ${slot} is invalid (number beyond KVM_CAP_NR_MEMSLOTS, or misaligned)`,
    });
  }

  registerMemory(memory: GuestMemory, firstSlot = 0): void {
    memory.regions.forEach((region, i) => {
      if (region.backing.kind !== 'host') {
        throw new Error(`guest RAM at 0x${region.guestAddress.toString(16)} is not mmap-backed: KVM needs GuestMemory.anonymous()`);
      }
      this.setUserMemoryRegion({ slot: firstSlot + i, guestAddress: region.guestAddress, size: region.size, hostAddress: region.backing.hostAddress });
    });
  }

  /** Three pages of guest-physical space Intel VMX needs for a real-mode TSS; must not overlap RAM in use. */
  setTssAddress(address: number): void {
    ioctlValue(this.fd, 'KVM_SET_TSS_ADDR', KVM_SET_TSS_ADDR, address);
  }

  /** One page for the identity-map page table VMX uses in unpaged real mode. */
  setIdentityMapAddress(address: number): void {
    const buf = new Uint8Array(new BigUint64Array([BigInt(address)]).buffer);
    ioctlBuffer(this.fd, 'KVM_SET_IDENTITY_MAP_ADDR', KVM_SET_IDENTITY_MAP_ADDR, buf);
  }

  /** In-kernel PIC x2, IOAPIC and a local APIC per vCPU; call before creating vCPUs. */
  createIrqchip(): void {
    ioctlValue(this.fd, 'KVM_CREATE_IRQCHIP', KVM_CREATE_IRQCHIP);
  }

  /** In-kernel i8254 PIT. The dummy speaker port (0x61) lets Linux calibrate without an exit per access. */
  createPit2(flags = KVM_PIT_SPEAKER_DUMMY): void {
    ioctlBuffer(this.fd, 'KVM_CREATE_PIT2', KVM_CREATE_PIT2, encodeExact(kvmPitConfig, { flags }));
  }

  setIrqLine(irq: number, level: boolean): void {
    this.irqLevelView.setUint32(0, irq, true);
    this.irqLevelView.setUint32(4, level ? 1 : 0, true);
    ioctlBuffer(this.fd, 'KVM_IRQ_LINE', KVM_IRQ_LINE, this.irqLevel, { ENXIO: 'no in-kernel irqchip (createIrqchip first)' });
  }

  irqfd(eventfd: EventFd, gsi: number): void {
    this.irqfdControl(eventfd, gsi, 0);
  }

  irqfdDeassign(eventfd: EventFd, gsi: number): void {
    this.irqfdControl(eventfd, gsi, KVM_IRQFD_FLAG_DEASSIGN);
  }

  private irqfdControl(eventfd: EventFd, gsi: number, flags: number): void {
    ioctlBuffer(this.fd, 'KVM_IRQFD', KVM_IRQFD, encodeExact(kvmIrqfd, { fd: eventfd.fd, gsi, flags }), {
      EBUSY: `eventfd ${eventfd.fd} is already an irqfd`,
    });
  }

  ioeventfd(eventfd: EventFd, spec: IoEventSpec): void {
    this.ioeventfdControl(eventfd, spec, 0);
  }

  ioeventfdDeassign(eventfd: EventFd, spec: IoEventSpec): void {
    this.ioeventfdControl(eventfd, spec, KVM_IOEVENTFD_FLAG_DEASSIGN);
  }

  private ioeventfdControl(eventfd: EventFd, { space, address, length, datamatch }: IoEventSpec, extraFlags: number): void {
    let flags = extraFlags;
    if (space === 'pio') flags |= KVM_IOEVENTFD_FLAG_PIO;
    if (datamatch !== undefined) {
      if (length === 0) throw new Error('an ioeventfd with datamatch needs a length of 1, 2, 4 or 8');
      flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    }
    const buf = encodeExact(kvmIoeventfd, { datamatch: datamatch ?? 0n, addr: BigInt(address), len: length, fd: eventfd.fd, flags });
    ioctlBuffer(this.fd, 'KVM_IOEVENTFD', KVM_IOEVENTFD, buf, {
      EEXIST: `an ioeventfd already listens at ${space} 0x${address.toString(16)}`,
      ENOENT: `no ioeventfd at ${space} 0x${address.toString(16)} to remove`,
    });
  }

  getClock(): ClockData {
    const buf = new Uint8Array(kvmClockData.size);
    ioctlBuffer(this.fd, 'KVM_GET_CLOCK', KVM_GET_CLOCK, buf);
    const { clock, flags, realtime, host_tsc } = decodeExact<ClockData>(kvmClockData, buf);
    return { clock, flags, realtime, host_tsc };
  }

  memoryEncryptOp(command: Uint8Array): void {
    ioctlBuffer(this.fd, 'KVM_MEMORY_ENCRYPT_OP', KVM_MEMORY_ENCRYPT_OP, command, {
      ENOTTY: 'this VM has no memory encryption (SEV not enabled in kvm-amd, or not an AMD host)',
    });
  }

  registerEncryptedRegion(hostAddress: bigint, size: number): void {
    ioctlBuffer(this.fd, 'KVM_MEMORY_ENCRYPT_REG_REGION', KVM_MEMORY_ENCRYPT_REG_REGION, encodeExact(kvmEncRegion, { addr: hostAddress, size: BigInt(size) }));
  }

  unregisterEncryptedRegion(hostAddress: bigint, size: number): void {
    ioctlBuffer(
      this.fd,
      'KVM_MEMORY_ENCRYPT_UNREG_REGION',
      KVM_MEMORY_ENCRYPT_UNREG_REGION,
      encodeExact(kvmEncRegion, { addr: hostAddress, size: BigInt(size) }),
    );
  }

  createVcpu(id: number): Vcpu {
    const fd = ioctlValue(this.fd, 'KVM_CREATE_VCPU', KVM_CREATE_VCPU, id, {
      EEXIST: `vCPU ${id} already exists`,
      EINVAL: `vCPU id ${id} is beyond KVM_CAP_MAX_VCPU_ID`,
    });
    return Vcpu.fromFd(id, fd, this.vcpuMmapSize);
  }

  close(): void {
    close(this.fd);
  }
}
