// An in-memory VM with the VirtualMachine interface: records what the VMM configures (memory slots,
// irqchip, interrupts, ioeventfds, encryption commands) so device, boot and SEV code can be tested
// without /dev/kvm. Guest memory is whatever GuestMemory the VMM registers (GuestMemory.shared works).
import { constants } from 'node:os';
import type { GuestMemory } from '../../../src/memory/guest-memory.js';
import { KVM_PIT_SPEAKER_DUMMY } from '../../../src/kvm/constants.js';
import type { EventFd } from '../../../src/sys/eventfd.js';
import { SysError } from '../../../src/sys/sys.js';
import type { ClockData, IoEventSpec, MemorySlot, VirtualMachine } from '../../../src/kvm/types.js';
import { MockVcpu } from './mock-vcpu.js';

export interface IrqLineCall {
  irq: number;
  level: boolean;
}
export interface IoEventRegistration {
  eventfd: EventFd;
  spec: IoEventSpec;
}

export class MockVm implements VirtualMachine {
  readonly slots: MemorySlot[] = [];
  memory: GuestMemory | undefined;
  tssAddress: number | undefined;
  identityMapAddress: number | undefined;
  irqchip = false;
  pitFlags: number | undefined;
  readonly irqLineCalls: IrqLineCall[] = [];
  readonly irqfds = new Map<number, EventFd>();
  readonly ioEvents: IoEventRegistration[] = [];
  readonly encryptedRegions: { hostAddress: bigint; size: number }[] = [];
  /** Copies of every KVM_MEMORY_ENCRYPT_OP command, as sent. */
  readonly encryptCommands: Uint8Array[] = [];
  /**
   * Plays the kernel for KVM_MEMORY_ENCRYPT_OP: may write results into `command` or throw a SysError.
   * Unset, the VM behaves like one without SEV (ENOTTY).
   */
  encryptOpHandler: ((command: Uint8Array) => void) | undefined;
  /** KVM_CHECK_EXTENSION answers; capabilities not listed answer 0. */
  readonly capabilities = new Map<number, number>();
  readonly vcpus: MockVcpu[] = [];
  closed = false;

  checkExtension(capability: number): number {
    return this.capabilities.get(capability) ?? 0;
  }

  setUserMemoryRegion(slot: MemorySlot): void {
    const clash = this.slots.find((s) => s.slot !== slot.slot && slot.guestAddress < s.guestAddress + s.size && s.guestAddress < slot.guestAddress + slot.size);
    if (clash) throw new SysError('KVM_SET_USER_MEMORY_REGION', constants.errno.EEXIST, `slot ${slot.slot} overlaps slot ${clash.slot}`);
    const i = this.slots.findIndex((s) => s.slot === slot.slot);
    if (i >= 0) this.slots.splice(i, 1);
    if (slot.size > 0) this.slots.push({ ...slot });
  }

  registerMemory(memory: GuestMemory, firstSlot = 0): void {
    for (const [i, r] of memory.regions.entries()) {
      this.setUserMemoryRegion({
        slot: firstSlot + i,
        guestAddress: r.guestAddress,
        size: r.size,
        hostAddress: r.backing.kind === 'host' ? r.backing.hostAddress : 0n,
      });
    }
    this.memory = memory;
  }

  setTssAddress(address: number): void {
    this.tssAddress = address;
  }
  setIdentityMapAddress(address: number): void {
    this.identityMapAddress = address;
  }
  createPit2(flags = KVM_PIT_SPEAKER_DUMMY): void {
    this.pitFlags = flags;
  }

  createIrqchip(): void {
    if (this.vcpus.length > 0) throw new SysError('KVM_CREATE_IRQCHIP', constants.errno.EINVAL, 'the irqchip must be created before any vCPU');
    this.irqchip = true;
  }

  setIrqLine(irq: number, level: boolean): void {
    if (!this.irqchip) throw new SysError('KVM_IRQ_LINE', constants.errno.ENXIO, 'no in-kernel irqchip (createIrqchip first)');
    this.irqLineCalls.push({ irq, level });
  }

  irqfd(eventfd: EventFd, gsi: number): void {
    if ([...this.irqfds.values()].includes(eventfd)) throw new SysError('KVM_IRQFD', constants.errno.EBUSY, `eventfd ${eventfd.fd} is already an irqfd`);
    this.irqfds.set(gsi, eventfd);
  }

  irqfdDeassign(eventfd: EventFd, gsi: number): void {
    if (this.irqfds.get(gsi) === eventfd) this.irqfds.delete(gsi);
  }

  /** Interrupts raised through the irqfd of `gsi` since the last call (reads its eventfd). */
  takeIrqfdSignals(gsi: number): number {
    const eventfd = this.irqfds.get(gsi);
    if (!eventfd) throw new Error(`no irqfd is bound to GSI ${gsi}`);
    return Number(eventfd.take());
  }

  ioeventfd(eventfd: EventFd, spec: IoEventSpec): void {
    if (this.ioEvents.some((r) => sameListener(r.spec, spec))) {
      throw new SysError('KVM_IOEVENTFD', constants.errno.EEXIST, `an ioeventfd already listens at ${spec.space} 0x${spec.address.toString(16)}`);
    }
    this.ioEvents.push({ eventfd, spec: { ...spec } });
  }

  ioeventfdDeassign(eventfd: EventFd, spec: IoEventSpec): void {
    const i = this.ioEvents.findIndex((r) => r.eventfd === eventfd && sameListener(r.spec, spec));
    if (i < 0) throw new SysError('KVM_IOEVENTFD', constants.errno.ENOENT, `no ioeventfd at ${spec.space} 0x${spec.address.toString(16)} to remove`);
    this.ioEvents.splice(i, 1);
  }

  /** What KVM does on a guest write: signal a matching ioeventfd and report that no exit is needed. */
  signalIoEvent(space: 'pio' | 'mmio', address: number, data: Uint8Array): boolean {
    const value = data.reduceRight((v, b) => (v << 8n) | BigInt(b), 0n);
    const match = this.ioEvents.find(
      ({ spec }) =>
        spec.space === space &&
        spec.address === address &&
        (spec.length === 0 || spec.length === data.length) &&
        (spec.datamatch === undefined || spec.datamatch === value),
    );
    match?.eventfd.signal();
    return match !== undefined;
  }

  getClock(): ClockData {
    return { clock: process.hrtime.bigint(), flags: 0, realtime: 0n, host_tsc: 0n };
  }

  memoryEncryptOp(command: Uint8Array): void {
    this.encryptCommands.push(command.slice());
    if (!this.encryptOpHandler) {
      throw new SysError('KVM_MEMORY_ENCRYPT_OP', constants.errno.ENOTTY, 'this VM has no memory encryption (SEV not enabled in kvm-amd, or not an AMD host)');
    }
    this.encryptOpHandler(command);
  }

  registerEncryptedRegion(hostAddress: bigint, size: number): void {
    this.encryptedRegions.push({ hostAddress, size });
  }

  unregisterEncryptedRegion(hostAddress: bigint, size: number): void {
    const i = this.encryptedRegions.findIndex((r) => r.hostAddress === hostAddress && r.size === size);
    if (i >= 0) this.encryptedRegions.splice(i, 1);
  }

  createVcpu(id: number): MockVcpu {
    if (this.vcpus.some((v) => v.id === id)) throw new SysError('KVM_CREATE_VCPU', constants.errno.EEXIST, `vCPU ${id} already exists`);
    const vcpu = new MockVcpu(id, this);
    this.vcpus.push(vcpu);
    return vcpu;
  }

  close(): void {
    this.closed = true;
  }
}

/** KVM treats ioeventfds as the same listener when space, address, length and datamatch agree. */
function sameListener(a: IoEventSpec, b: IoEventSpec): boolean {
  return a.space === b.space && a.address === b.address && a.length === b.length && a.datamatch === b.datamatch;
}
