// The hardware path's plumbing: struct kvm_sev_cmd and its payloads reach "the kernel" at real host
// addresses, length queries are answered as KVM answers them, firmware errors come back by name. The VM
// here plays KVM's part of the protocol; the hardware itself is only exercised on a SEV host.
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import { decodeExact, encodeExact } from '../../src/sys/abi.js';
import { SysError, viewAt } from '../../src/sys/sys.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { KernelSevLaunch, type EncryptingVm } from '../../src/sev/kvm-sev.js';
import { SevDevice } from '../../src/sev/psp.js';
import { KvmSevCommand, kvmSevCmd, kvmSevLaunchMeasure, kvmSevLaunchSecret, kvmSevLaunchStart, kvmSevLaunchUpdateData } from '../../src/sev/sev-abi.js';
import { SevFirmwareError, SevStatus } from '../../src/sev/status.js';
import type { SevPlatform } from '../../src/sev/firmware.js';

interface Cmd {
  id: number;
  data: bigint;
  error: number;
  sev_fd: number;
}

class KvmSevProtocol implements EncryptingVm {
  readonly log: string[] = [];
  readonly regions: [bigint, number][] = [];
  failWith?: number;

  memoryEncryptOp(command: Uint8Array): void {
    const cmd = decodeExact<Cmd>(kvmSevCmd, command);
    const fail = (error: number) => {
      encodeExact(kvmSevCmd, { ...cmd, error }, command);
      throw new SysError('KVM_MEMORY_ENCRYPT_OP', 5);
    };
    this.log.push(`${cmd.id} fd=${cmd.sev_fd}`);
    if (this.failWith !== undefined) fail(this.failWith);
    if (cmd.id === KvmSevCommand.LAUNCH_START) {
      const p = viewAt(cmd.data, kvmSevLaunchStart.size);
      const s = decodeExact<{ policy: number; dh_uaddr: bigint; dh_len: number; session_len: number }>(kvmSevLaunchStart, p);
      this.log.push(`start policy=${s.policy} dh=${s.dh_len} session=${s.session_len} dh[0]=${viewAt(s.dh_uaddr, s.dh_len)[0]}`);
      encodeExact(kvmSevLaunchStart, { ...s, handle: 7 }, p);
    } else if (cmd.id === KvmSevCommand.LAUNCH_UPDATE_DATA) {
      const u = decodeExact<{ uaddr: bigint; len: number }>(kvmSevLaunchUpdateData, viewAt(cmd.data, kvmSevLaunchUpdateData.size));
      this.log.push(`update ${Buffer.from(viewAt(u.uaddr, u.len)).toString()}`);
    } else if (cmd.id === KvmSevCommand.LAUNCH_MEASURE) {
      const p = viewAt(cmd.data, kvmSevLaunchMeasure.size);
      const m = decodeExact<{ uaddr: bigint; len: number }>(kvmSevLaunchMeasure, p);
      if (m.len === 0) {
        encodeExact(kvmSevLaunchMeasure, { uaddr: 0n, len: 48 }, p);
        fail(SevStatus.INVALID_LEN);
      }
      viewAt(m.uaddr, m.len).fill(0xab);
    } else if (cmd.id === KvmSevCommand.LAUNCH_SECRET) {
      const s = decodeExact<{ hdr_uaddr: bigint; hdr_len: number; guest_uaddr: bigint; guest_len: number; trans_uaddr: bigint; trans_len: number }>(
        kvmSevLaunchSecret,
        viewAt(cmd.data, kvmSevLaunchSecret.size),
      );
      viewAt(s.guest_uaddr, s.guest_len).set(viewAt(s.trans_uaddr, s.trans_len));
      this.log.push(`secret hdr=${s.hdr_len} len=${s.guest_len}`);
    }
  }

  registerEncryptedRegion(hostAddress: bigint, size: number): void {
    this.regions.push([hostAddress, size]);
  }
}

const platform = { fd: 42 } as SevPlatform & { fd: number };

describe('sev: KVM launch commands (kernel path)', () => {
  it('passes structs and buffers by host address and follows the measure length query', () => {
    const vm = new KvmSevProtocol();
    const launch = new KernelSevLaunch(vm, platform);
    const memory = GuestMemory.anonymous([
      { guestAddress: 0, size: 0x10000 },
      { guestAddress: 0x10_0000, size: 0x2000 },
    ]);
    memory.write(0x1000, Buffer.from('kernel bytes 16!'));
    launch.init(false);
    expect(launch.launchStart({ policy: 3, godh: new Uint8Array(0x824).fill(9), session: new Uint8Array(128) })).to.equal(7);
    launch.launchUpdateData(memory, 0x1000, 16);
    launch.launchUpdateData(memory, 0x1000, 16);
    const measurement = launch.launchMeasure();
    expect(Buffer.from(measurement)).to.deep.equal(Buffer.alloc(48, 0xab));
    launch.launchSecret({ header: Buffer.alloc(52), payload: Buffer.from('sixteen byte sec') }, memory, 0x6000);
    expect(Buffer.from(memory.read(0x6000, 16)).toString()).to.equal('sixteen byte sec');
    expect(vm.log).to.deep.equal([
      `${KvmSevCommand.INIT} fd=42`,
      `${KvmSevCommand.LAUNCH_START} fd=42`,
      'start policy=3 dh=2084 session=128 dh[0]=9',
      `${KvmSevCommand.LAUNCH_UPDATE_DATA} fd=42`,
      'update kernel bytes 16!',
      `${KvmSevCommand.LAUNCH_UPDATE_DATA} fd=42`,
      'update kernel bytes 16!',
      `${KvmSevCommand.LAUNCH_MEASURE} fd=42`,
      `${KvmSevCommand.LAUNCH_MEASURE} fd=42`,
      `${KvmSevCommand.LAUNCH_SECRET} fd=42`,
      'secret hdr=52 len=16',
    ]);
    const host = memory.regions.map((r) => (r.backing.kind === 'host' ? r.backing.hostAddress : -1n));
    expect(vm.regions).to.deep.equal([
      [host[0], 0x10000],
      [host[1], 0x2000],
    ]);
  });

  it('reports the firmware status by name', () => {
    const vm = new KvmSevProtocol();
    const launch = new KernelSevLaunch(vm, platform);
    vm.failWith = SevStatus.BAD_MEASUREMENT;
    expect(() =>
      launch.launchSecret({ header: Buffer.alloc(52), payload: Buffer.alloc(16) }, GuestMemory.anonymous([{ guestAddress: 0, size: 0x8000 }]), 0x6000),
    ).to.throw(SevFirmwareError, 'LAUNCH_SECRET failed: BAD_MEASUREMENT (0x0b)');
  });

  it('refuses guest memory the kernel cannot address', () => {
    const launch = new KernelSevLaunch(new KvmSevProtocol(), platform);
    expect(() => launch.launchUpdateData(GuestMemory.shared([{ guestAddress: 0, size: 0x1000 }]), 0, 16)).to.throw('mmap-backed');
  });

  (existsSync('/dev/sev') ? it.skip : it)('names a missing /dev/sev', () => {
    expect(() => SevDevice.open('/dev/sev')).to.throw(SysError, 'no SEV-capable AMD Secure Processor');
  });
});
