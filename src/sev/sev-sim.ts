// sev-sim: a software model of the SEV firmware's launch path, for machines without SEV hardware. It keeps
// the cryptographic protocol real (the platform identity, the session unwrap, the launch digest, the
// measurement, the secret's MAC and decryption) and the firmware's checks (guest state machine, lengths,
// alignment, policy), answering with the firmware's status codes. It does NOT encrypt guest memory:
// the host can read and change everything; only the protocol is simulated.
import { createHash, randomBytes, type Hash } from 'node:crypto';
import type { GuestMemory } from '../memory/guest-memory.js';
import { Usage, describeAlgorithm } from './certificate-key.js';
import { encodeSevChain } from './chain.js';
import type { GuestStateName, GuestStatus, LaunchStart, PlatformStatus, SevLaunchBackend, SevPlatform } from './firmware.js';
import { computeMeasure, encodeMeasurement, type FirmwareBuild } from './measurement.js';
import { POLICY_RESERVED_MASK, PolicyBit, decodePolicy } from './policy.js';
import { SECRET_HEADER_SIZE, SecretIntegrityError, openSecretPacket, parseSecretHeader, type SecretPacket } from './secret.js';
import { SESSION_SIZE, SessionIntegrityError, parseSession, sharedSecret, unwrapTransportKeys, type TransportKeys } from './session.js';
import { Curve, SEV_CERT_SIZE, SevCertificate } from './sev-certificate.js';
import { SEV_STATUS_FLAGS_CONFIG_ES } from './sev-abi.js';
import type { SimulatedIdentity } from './sim-identity.js';
import { SevFirmwareError, SevStatus } from './status.js';
import { errorMessage } from '../sys/error-message.js';

export const SEV_SIM_WARNING =
  'sev-sim: simulated SEV firmware: guest memory is NOT encrypted; the launch protocol and measurement are real, the confidentiality is not';

const VMSA_SIZE = 4096;

interface Guest {
  handle: number;
  policy: number;
  state: GuestStateName;
  keys: TransportKeys;
  digest: Hash;
  vmsasMeasured: boolean;
  measure?: Uint8Array;
}

export interface SimulatorOptions {
  build?: FirmwareBuild;
  /** Where the "no encryption" notice goes (default: stderr). */
  warn?: (message: string) => void;
}

/** The simulated platform (what /dev/sev answers). */
export class SimulatedPlatform implements SevPlatform {
  guestCount = 0;
  state: 'UNINIT' | 'INIT' | 'WORKING' = 'UNINIT';
  private lastHandle = 0;

  constructor(
    readonly identity: SimulatedIdentity,
    readonly build: FirmwareBuild = { apiMajor: 0, apiMinor: 24, build: 15 },
  ) {}

  platformStatus(): PlatformStatus {
    return { ...this.build, state: this.state, flags: SEV_STATUS_FLAGS_CONFIG_ES, guestCount: this.guestCount };
  }

  pdhCertExport(): { pdh: SevCertificate; chain: Uint8Array } {
    const all = encodeSevChain(this.identity.chain);
    return { pdh: this.identity.chain.pdh, chain: all.slice(SEV_CERT_SIZE) };
  }

  pekCsr(): Uint8Array {
    const pek = this.identity.chain.pek;
    return SevCertificate.create({ usage: Usage.PEK, publicKey: pek.publicKey(), apiMajor: pek.apiMajor, apiMinor: pek.apiMinor }).bytes;
  }

  getId(): Uint8Array {
    return Uint8Array.from(this.identity.chipId);
  }

  allocateHandle(): number {
    return ++this.lastHandle;
  }
}

/** One VM's launch on the simulated firmware. */
export class SevSimulator implements SevLaunchBackend {
  readonly kind = 'sev-sim';
  readonly platform: SimulatedPlatform;
  private initialized: 'sev' | 'sev-es' | undefined;
  private guest: Guest | undefined;

  constructor(platform: SimulatedPlatform | SimulatedIdentity, options: SimulatorOptions = {}) {
    this.platform = platform instanceof SimulatedPlatform ? platform : new SimulatedPlatform(platform, options.build);
    (options.warn ?? ((m: string) => process.stderr.write(`${m}\n`)))(SEV_SIM_WARNING);
  }

  private fail(command: string, status: number, detail: string): never {
    throw new SevFirmwareError(command, status, detail);
  }

  private guestIn(command: string, state: GuestStateName): Guest {
    const g = this.guest;
    if (!g) this.fail(command, SevStatus.INVALID_GUEST, 'no guest was launched (LAUNCH_START first)');
    if (g.state !== state) this.fail(command, SevStatus.INVALID_GUEST_STATE, `guest is in ${g.state}, the command needs ${state}`);
    return g;
  }

  private checkRange(command: string, memory: GuestMemory, guestAddress: number, length: number): void {
    if (length === 0 || length % 16 !== 0) this.fail(command, SevStatus.INVALID_LEN, `length ${length} is not a non-zero multiple of 16`);
    if (guestAddress % 16 !== 0) this.fail(command, SevStatus.INVALID_ADDRESS, `address 0x${guestAddress.toString(16)} is not 16-byte aligned`);
    if (!memory.contains(guestAddress, length))
      this.fail(command, SevStatus.INVALID_ADDRESS, `0x${guestAddress.toString(16)}+0x${length.toString(16)} is outside guest memory`);
  }

  init(encryptedState: boolean): void {
    const command = encryptedState ? 'ES_INIT' : 'INIT';
    if (this.initialized) this.fail(command, SevStatus.INVALID_GUEST_STATE, `this VM is already ${this.initialized}-initialized`);
    this.initialized = encryptedState ? 'sev-es' : 'sev';
    if (this.platform.state === 'UNINIT') this.platform.state = 'INIT';
  }

  launchStart(start: LaunchStart): number {
    const command = 'LAUNCH_START';
    if (!this.initialized) this.fail(command, SevStatus.INVALID_PLATFORM_STATE, 'INIT or ES_INIT was not issued for this VM');
    if (this.guest) this.fail(command, SevStatus.INVALID_GUEST_STATE, `guest is in ${this.guest.state}, not UNINIT`);
    const policy = start.policy >>> 0;
    if (policy & POLICY_RESERVED_MASK) this.fail(command, SevStatus.INVALID_PARAM, `policy 0x${policy.toString(16)} sets reserved bits`);
    const p = decodePolicy(policy);
    const fw = this.platform.build;
    if (p.minApiMajor > fw.apiMajor || (p.minApiMajor === fw.apiMajor && p.minApiMinor > fw.apiMinor)) {
      this.fail(command, SevStatus.POLICY_FAILURE, `policy requires API ${p.minApiMajor}.${p.minApiMinor}, firmware is ${fw.apiMajor}.${fw.apiMinor}`);
    }
    if (p.encryptedState !== (this.initialized === 'sev-es')) {
      this.fail(command, SevStatus.POLICY_FAILURE, `policy ES bit ${p.encryptedState ? 'set' : 'clear'} but the VM was ${this.initialized}-initialized`);
    }
    if (!start.godh && start.session) this.fail(command, SevStatus.INVALID_PARAM, 'a session without a GODH certificate');
    // Without a GODH the firmware draws the transport keys itself: the launch works but nobody can attest it.
    const keys = start.godh ? this.unwrap(command, start, policy) : { tek: randomBytes(16), tik: randomBytes(16) };
    this.guest = { handle: this.platform.allocateHandle(), policy, state: 'LUPDATE', keys, digest: createHash('sha256'), vmsasMeasured: false };
    this.platform.guestCount++;
    this.platform.state = 'WORKING';
    return this.guest.handle;
  }

  private unwrap(command: string, start: LaunchStart, policy: number): TransportKeys {
    if (start.godh!.length !== SEV_CERT_SIZE) this.fail(command, SevStatus.INVALID_LEN, `GODH certificate is ${start.godh!.length} bytes`);
    let godh: SevCertificate;
    try {
      godh = SevCertificate.parse(start.godh!, 'GODH');
    } catch (e) {
      this.fail(command, SevStatus.INVALID_CERTIFICATE, errorMessage(e));
    }
    if (godh.usage !== Usage.PDH || describeAlgorithm(godh.algorithm)?.kind !== 'ecdh' || godh.curve !== Curve.P384) {
      this.fail(command, SevStatus.INVALID_CERTIFICATE, 'GODH is not a P-384 Diffie-Hellman certificate');
    }
    if (!start.session || start.session.length !== SESSION_SIZE)
      this.fail(command, SevStatus.INVALID_LEN, `session is ${start.session?.length ?? 0} bytes, expected ${SESSION_SIZE}`);
    const z = sharedSecret(this.platform.identity.keys.pdh, godh);
    try {
      return unwrapTransportKeys(z, parseSession(start.session), policy);
    } catch (e) {
      if (e instanceof SessionIntegrityError) this.fail(command, SevStatus.BAD_MEASUREMENT, e.message);
      throw e;
    }
  }

  launchUpdateData(memory: GuestMemory, guestAddress: number, length: number): void {
    const command = 'LAUNCH_UPDATE_DATA';
    const g = this.guestIn(command, 'LUPDATE');
    this.checkRange(command, memory, guestAddress, length);
    g.digest.update(memory.slice(guestAddress, length));
  }

  launchUpdateVmsa(vmsas: readonly Uint8Array[]): void {
    const command = 'LAUNCH_UPDATE_VMSA';
    const g = this.guestIn(command, 'LUPDATE');
    if (!(g.policy & PolicyBit.ES)) this.fail(command, SevStatus.POLICY_FAILURE, 'the guest policy is not SEV-ES');
    if (g.vmsasMeasured) this.fail(command, SevStatus.INVALID_GUEST_STATE, 'the VMSAs were already measured');
    if (vmsas.length === 0) this.fail(command, SevStatus.INVALID_PARAM, 'no vCPU VMSA given');
    for (const [i, vmsa] of vmsas.entries()) {
      if (vmsa.length !== VMSA_SIZE) this.fail(command, SevStatus.INVALID_LEN, `VMSA of vCPU ${i} is ${vmsa.length} bytes, expected ${VMSA_SIZE}`);
    }
    for (const vmsa of vmsas) g.digest.update(vmsa);
    g.vmsasMeasured = true;
  }

  launchMeasure(): Uint8Array {
    const g = this.guestIn('LAUNCH_MEASURE', 'LUPDATE');
    const mnonce = randomBytes(16);
    const measure = computeMeasure(g.keys.tik, this.platform.build, g.policy, g.digest.digest(), mnonce);
    g.measure = measure;
    g.state = 'LSECRET';
    return encodeMeasurement({ measure, mnonce });
  }

  launchSecret(packet: SecretPacket, memory: GuestMemory, guestAddress: number): void {
    const command = 'LAUNCH_SECRET';
    const g = this.guestIn(command, 'LSECRET');
    if (packet.header.length !== SECRET_HEADER_SIZE)
      this.fail(command, SevStatus.INVALID_LEN, `header is ${packet.header.length} bytes, expected ${SECRET_HEADER_SIZE}`);
    const header = parseSecretHeader(packet.header);
    if (header.flags !== 0) this.fail(command, SevStatus.INVALID_PARAM, `header flags 0x${header.flags.toString(16)} (compression is not supported)`);
    this.checkRange(command, memory, guestAddress, packet.payload.length);
    let plaintext: Buffer;
    try {
      plaintext = openSecretPacket(g.keys, g.measure!, header, packet.payload, packet.payload.length);
    } catch (e) {
      if (e instanceof SecretIntegrityError) this.fail(command, SevStatus.BAD_MEASUREMENT, e.message);
      throw e;
    }
    memory.write(guestAddress, plaintext);
  }

  launchFinish(): void {
    const g = this.guestIn('LAUNCH_FINISH', 'LSECRET');
    g.state = 'RUNNING';
  }

  guestStatus(): GuestStatus {
    const g = this.guest;
    if (!g) this.fail('GUEST_STATUS', SevStatus.INVALID_GUEST, 'no guest was launched');
    return { handle: g.handle, policy: g.policy, state: g.state };
  }
}
