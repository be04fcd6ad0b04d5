// The hardware launch backend: KVM's SEV commands (KVM_MEMORY_ENCRYPT_OP on the VM fd, each naming the
// /dev/sev fd as proof of access), which KVM forwards to the AMD Secure Processor.
import { decodeExact, encodeExact, type StructDecl } from '../sys/abi.js';
import type { VirtualMachine } from '../kvm/types.js';
import type { GuestMemory, MemoryRegion } from '../memory/guest-memory.js';
import { guestStateName, type GuestStatus, type LaunchStart, type SevLaunchBackend, type SevPlatform } from './firmware.js';
import { KernelBuffers } from './kernel-buffers.js';
import type { SecretPacket } from './secret.js';
import { KvmSevCommand, kvmSevCmd, kvmSevGuestStatus, kvmSevLaunchMeasure, kvmSevLaunchSecret, kvmSevLaunchStart, kvmSevLaunchUpdateData } from './sev-abi.js';
import { SevFirmwareError, SevStatus } from './status.js';

/** The part of a KVM VM the SEV launch needs. */
export type EncryptingVm = Pick<VirtualMachine, 'memoryEncryptOp' | 'registerEncryptedRegion'>;

export class KernelSevLaunch implements SevLaunchBackend {
  readonly kind = 'sev';
  private readonly buffers = new KernelBuffers();
  private readonly pinned = new Set<MemoryRegion>();

  /** `platform` is the open /dev/sev (SevDevice): KVM checks its fd on every command. */
  constructor(
    private readonly vm: EncryptingVm,
    readonly platform: SevPlatform & { readonly fd: number },
  ) {}

  /** Issues one KVM SEV command with payload `decl` (filled from `params`); returns the payload as KVM left it. */
  private command<T>(name: string, id: number, payload?: { decl: StructDecl; params: object }, lengthQuery = false): T | undefined {
    const data = payload ? this.buffers.allocate(payload.decl.size, undefined, name) : undefined;
    if (payload && data) encodeExact(payload.decl, payload.params, data.bytes);
    const cmd = encodeExact(kvmSevCmd, { id, data: data?.address ?? 0n, error: 0, sev_fd: this.platform.fd });
    try {
      this.vm.memoryEncryptOp(cmd);
    } catch (e) {
      const error = decodeExact<{ error: number }>(kvmSevCmd, cmd).error;
      if (error === 0) throw e;
      if (!(lengthQuery && error === SevStatus.INVALID_LEN)) throw new SevFirmwareError(name, error);
    }
    return payload && data ? decodeExact<T>(payload.decl, data.bytes) : undefined;
  }

  /**
   * Host address of guest memory. The first time a GuestMemory is seen, all its RAM is pinned
   * (KVM_MEMORY_ENCRYPT_REG_REGION), as QEMU does for every RAM block: pages of an SEV guest must not move.
   */
  private hostAddress(memory: GuestMemory, guestAddress: number, length: number, what: string): bigint {
    const region = memory.regionFor(guestAddress, length);
    if (!region) throw new RangeError(`${what}: guest range 0x${guestAddress.toString(16)}+0x${length.toString(16)} is not inside guest RAM`);
    if (region.backing.kind !== 'host') throw new Error(`${what}: hardware SEV needs mmap-backed guest memory (GuestMemory.anonymous)`);
    if (!this.pinned.has(region)) {
      for (const r of memory.regions) {
        if (r.backing.kind !== 'host' || this.pinned.has(r)) continue;
        this.vm.registerEncryptedRegion(r.backing.hostAddress, r.size);
        this.pinned.add(r);
      }
    }
    return region.backing.hostAddress + BigInt(guestAddress - region.guestAddress);
  }

  init(encryptedState: boolean): void {
    this.buffers.reset();
    this.command(encryptedState ? 'ES_INIT' : 'INIT', encryptedState ? KvmSevCommand.ES_INIT : KvmSevCommand.INIT);
  }

  launchStart(start: LaunchStart): number {
    if ((start.godh === undefined) !== (start.session === undefined)) throw new Error('LAUNCH_START: the GODH certificate and the session go together');
    this.buffers.reset();
    const dh = start.godh ? this.buffers.allocate(start.godh.length, start.godh, 'GODH') : undefined;
    const session = start.session ? this.buffers.allocate(start.session.length, start.session, 'session') : undefined;
    const out = this.command<{ handle: number }>('LAUNCH_START', KvmSevCommand.LAUNCH_START, {
      decl: kvmSevLaunchStart,
      params: {
        handle: 0,
        policy: start.policy,
        dh_uaddr: dh?.address ?? 0n,
        dh_len: start.godh?.length ?? 0,
        session_uaddr: session?.address ?? 0n,
        session_len: start.session?.length ?? 0,
      },
    });
    return out!.handle;
  }

  launchUpdateData(memory: GuestMemory, guestAddress: number, length: number): void {
    const uaddr = this.hostAddress(memory, guestAddress, length, 'LAUNCH_UPDATE_DATA');
    this.buffers.reset();
    this.command('LAUNCH_UPDATE_DATA', KvmSevCommand.LAUNCH_UPDATE_DATA, { decl: kvmSevLaunchUpdateData, params: { uaddr, len: length } });
  }

  launchUpdateVmsa(_vmsas: readonly Uint8Array[]): void {
    this.buffers.reset();
    this.command('LAUNCH_UPDATE_VMSA', KvmSevCommand.LAUNCH_UPDATE_VMSA);
  }

  launchMeasure(): Uint8Array {
    this.buffers.reset();
    const query = this.command<{ len: number }>(
      'LAUNCH_MEASURE',
      KvmSevCommand.LAUNCH_MEASURE,
      { decl: kvmSevLaunchMeasure, params: { uaddr: 0n, len: 0 } },
      true,
    );
    this.buffers.reset();
    const out = this.buffers.allocate(query!.len, undefined, 'measurement');
    const got = this.command<{ len: number }>('LAUNCH_MEASURE', KvmSevCommand.LAUNCH_MEASURE, {
      decl: kvmSevLaunchMeasure,
      params: { uaddr: out.address, len: query!.len },
    });
    return out.bytes.slice(0, got!.len);
  }

  launchSecret(packet: SecretPacket, memory: GuestMemory, guestAddress: number): void {
    const guest = this.hostAddress(memory, guestAddress, packet.payload.length, 'LAUNCH_SECRET');
    this.buffers.reset();
    const header = this.buffers.allocate(packet.header.length, packet.header, 'secret header');
    const payload = this.buffers.allocate(packet.payload.length, packet.payload, 'secret payload');
    this.command('LAUNCH_SECRET', KvmSevCommand.LAUNCH_SECRET, {
      decl: kvmSevLaunchSecret,
      params: {
        hdr_uaddr: header.address,
        hdr_len: packet.header.length,
        guest_uaddr: guest,
        guest_len: packet.payload.length,
        trans_uaddr: payload.address,
        trans_len: packet.payload.length,
      },
    });
  }

  launchFinish(): void {
    this.buffers.reset();
    this.command('LAUNCH_FINISH', KvmSevCommand.LAUNCH_FINISH);
  }

  guestStatus(): GuestStatus {
    this.buffers.reset();
    const s = this.command<{ handle: number; policy: number; state: number }>('GUEST_STATUS', KvmSevCommand.GUEST_STATUS, {
      decl: kvmSevGuestStatus,
      params: {},
    });
    return { handle: s!.handle, policy: s!.policy, state: guestStateName(s!.state) };
  }

  close(): void {
    this.buffers.close();
  }
}
