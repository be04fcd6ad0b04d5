import { expect } from 'chai';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { verifyChain, parseSevChain, type FullChain } from '../../src/sev/chain.js';
import { SEV_SIM_WARNING, SevSimulator, SimulatedPlatform } from '../../src/sev/sev-sim.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { createSession, parseSession, encodeSession, type OwnerSession } from '../../src/sev/session.js';
import { parseMeasurement, verifyMeasurement } from '../../src/sev/measurement.js';
import { buildSecretPacket, buildSecretTable, parseSecretTable } from '../../src/sev/secret.js';
import { SevFirmwareError } from '../../src/sev/status.js';
import { PolicyBit } from '../../src/sev/policy.js';
import { createHash } from 'node:crypto';

const quiet = { warn: () => undefined };

function expectStatus(fn: () => unknown, command: string, status: string): void {
  try {
    fn();
  } catch (e) {
    expect(e).to.be.instanceOf(SevFirmwareError);
    expect((e as SevFirmwareError).message).to.match(new RegExp(`^${command} failed: ${status} \\(0x[0-9a-f]{2}\\)`));
    return;
  }
  expect.fail(`${command} was accepted, expected ${status}`);
}

describe('sev: sev-sim firmware', () => {
  let identity: SimulatedIdentity;
  let platform: SimulatedPlatform;
  let owner: OwnerSession;
  let memory: GuestMemory;
  const policy = PolicyBit.NODBG | PolicyBit.NOKS;

  before(() => {
    identity = SimulatedIdentity.generate({ caBits: 2048 });
    platform = new SimulatedPlatform(identity);
  });

  beforeEach(() => {
    memory = GuestMemory.shared([{ guestAddress: 0, size: 0x10_0000 }]);
    owner = createSession(platform.pdhCertExport().pdh, policy);
  });

  function started(p = policy, s: OwnerSession = owner): SevSimulator {
    const sim = new SevSimulator(platform, quiet);
    sim.init((p & PolicyBit.ES) !== 0);
    sim.launchStart({ policy: p, godh: s.godh.bytes, session: s.session });
    return sim;
  }

  it('announces that it does not encrypt memory', () => {
    const said: string[] = [];
    new SevSimulator(platform, { warn: (m) => said.push(m) });
    expect(said).to.deep.equal([SEV_SIM_WARNING]);
    expect(SEV_SIM_WARNING).to.contain('NOT encrypted');
  });

  it('exports a PDH and chain that verify under its own ARK/ASK', () => {
    const { pdh, chain } = platform.pdhCertExport();
    const sev = parseSevChain(Buffer.concat([pdh.bytes, chain]));
    const full: FullChain = { ...sev, ark: identity.chain.ark, ask: identity.chain.ask };
    expect(verifyChain(full).bytes).to.deep.equal(pdh.bytes);
    expect(platform.getId()).to.have.length(64);
  });

  it('keeps its identity in a state directory an owner can pin', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-sev-'));
    try {
      const a = SimulatedIdentity.loadOrCreate(path.join(dir, 'state'), { caBits: 2048 });
      const b = SimulatedIdentity.loadOrCreate(path.join(dir, 'state'));
      expect(Buffer.from(b.chain.pdh.bytes)).to.deep.equal(Buffer.from(a.chain.pdh.bytes));
      expect(Buffer.from(b.chipId)).to.deep.equal(Buffer.from(a.chipId));
      expect(statSync(path.join(dir, 'state', 'pdh.key')).mode & 0o077).to.equal(0);
      // A session made for the saved PDH is accepted by a simulator that reloaded the identity.
      const sim = new SevSimulator(b, quiet);
      sim.init(false);
      const s = createSession(a.chain.pdh, 0);
      expect(sim.launchStart({ policy: 0, godh: s.godh.bytes, session: s.session })).to.be.greaterThan(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a session made for another PDH (wrap_mac)', () => {
    const other = SimulatedIdentity.generate({ caBits: 2048 });
    const foreign = createSession(other.chain.pdh, policy);
    const sim = new SevSimulator(platform, quiet);
    sim.init(false);
    expectStatus(() => sim.launchStart({ policy, godh: foreign.godh.bytes, session: foreign.session }), 'LAUNCH_START', 'BAD_MEASUREMENT');
  });

  it('refuses a tampered wrap_mac and a tampered policy_mac', () => {
    for (const field of ['wrapMac', 'policyMac'] as const) {
      const blob = parseSession(owner.session);
      blob[field][7]! ^= 0x40;
      const sim = new SevSimulator(platform, quiet);
      sim.init(false);
      expectStatus(() => sim.launchStart({ policy, godh: owner.godh.bytes, session: encodeSession(blob) }), 'LAUNCH_START', 'BAD_MEASUREMENT');
    }
  });

  it('refuses a policy other than the one the session was made for', () => {
    const sim = new SevSimulator(platform, quiet);
    sim.init(false);
    expectStatus(() => sim.launchStart({ policy: PolicyBit.NODBG, godh: owner.godh.bytes, session: owner.session }), 'LAUNCH_START', 'BAD_MEASUREMENT');
  });

  it('enforces policy: reserved bits, minimum API version, ES bit against ES_INIT', () => {
    const sim = () => {
      const s = new SevSimulator(platform, quiet);
      s.init(false);
      return s;
    };
    expectStatus(() => sim().launchStart({ policy: 1 << 6 }), 'LAUNCH_START', 'INVALID_PARAM');
    expectStatus(() => sim().launchStart({ policy: 1 << 16 }), 'LAUNCH_START', 'POLICY_FAILURE');
    expectStatus(() => sim().launchStart({ policy: PolicyBit.ES }), 'LAUNCH_START', 'POLICY_FAILURE');
  });

  it('rejects a malformed GODH and a short session', () => {
    const sim = () => {
      const s = new SevSimulator(platform, quiet);
      s.init(false);
      return s;
    };
    const bad = Uint8Array.from(owner.godh.bytes);
    bad[0x08] = 0x02; // usage field: not PDH
    expectStatus(() => sim().launchStart({ policy, godh: bad, session: owner.session }), 'LAUNCH_START', 'INVALID_CERTIFICATE');
    expectStatus(() => sim().launchStart({ policy, godh: owner.godh.bytes, session: owner.session.subarray(0, 100) }), 'LAUNCH_START', 'INVALID_LEN');
  });

  it('orders commands with the guest state machine', () => {
    const fresh = new SevSimulator(platform, quiet);
    expectStatus(() => fresh.launchStart({ policy }), 'LAUNCH_START', 'INVALID_PLATFORM_STATE');
    expectStatus(() => fresh.launchMeasure(), 'LAUNCH_MEASURE', 'INVALID_GUEST');
    const sim = started();
    expect(sim.guestStatus().state).to.equal('LUPDATE');
    expectStatus(() => sim.launchFinish(), 'LAUNCH_FINISH', 'INVALID_GUEST_STATE');
    expectStatus(() => sim.launchStart({ policy }), 'LAUNCH_START', 'INVALID_GUEST_STATE');
    sim.launchMeasure();
    expect(sim.guestStatus().state).to.equal('LSECRET');
    expectStatus(() => sim.launchUpdateData(memory, 0, 16), 'LAUNCH_UPDATE_DATA', 'INVALID_GUEST_STATE');
    sim.launchFinish();
    expect(sim.guestStatus()).to.include({ state: 'RUNNING', policy });
  });

  it('checks LAUNCH_UPDATE_DATA length, alignment and bounds', () => {
    const sim = started();
    expectStatus(() => sim.launchUpdateData(memory, 0x1000, 15), 'LAUNCH_UPDATE_DATA', 'INVALID_LEN');
    expectStatus(() => sim.launchUpdateData(memory, 0x1000, 0), 'LAUNCH_UPDATE_DATA', 'INVALID_LEN');
    expectStatus(() => sim.launchUpdateData(memory, 0x1008, 16), 'LAUNCH_UPDATE_DATA', 'INVALID_ADDRESS');
    expectStatus(() => sim.launchUpdateData(memory, 0x10_0000 - 16, 32), 'LAUNCH_UPDATE_DATA', 'INVALID_ADDRESS');
    expectStatus(() => sim.launchUpdateVmsa([new Uint8Array(4096)]), 'LAUNCH_UPDATE_VMSA', 'POLICY_FAILURE');
  });

  it('measures one running SHA-256 of the data, as LAUNCH_MEASURE reports it', () => {
    memory.write(0x2000, Buffer.from('first region, 32 bytes long!!!!!'));
    memory.write(0x8000, Buffer.from('second region of sixteen'.padEnd(48, '.')));
    const sim = started();
    sim.launchUpdateData(memory, 0x2000, 32);
    sim.launchUpdateData(memory, 0x8000, 48);
    const m = parseMeasurement(sim.launchMeasure());
    const digest = createHash('sha256').update(memory.slice(0x2000, 32)).update(memory.slice(0x8000, 48)).digest();
    expect(verifyMeasurement(m, owner.keys.tik, platform.build, policy, digest)).to.equal(true);
    const other = createHash('sha256').update(memory.slice(0x8000, 48)).update(memory.slice(0x2000, 32)).digest();
    expect(verifyMeasurement(m, owner.keys.tik, platform.build, policy, other)).to.equal(false);
  });

  it('measures SEV-ES VMSAs after the data', () => {
    const esPolicy = policy | PolicyBit.ES;
    const s = createSession(platform.pdhCertExport().pdh, esPolicy);
    const sim = started(esPolicy, s);
    const vmsas = [new Uint8Array(4096).fill(1), new Uint8Array(4096).fill(2)];
    sim.launchUpdateData(memory, 0, 64);
    expectStatus(() => sim.launchUpdateVmsa([new Uint8Array(100)]), 'LAUNCH_UPDATE_VMSA', 'INVALID_LEN');
    sim.launchUpdateVmsa(vmsas);
    expectStatus(() => sim.launchUpdateVmsa(vmsas), 'LAUNCH_UPDATE_VMSA', 'INVALID_GUEST_STATE');
    const m = parseMeasurement(sim.launchMeasure());
    const digest = createHash('sha256').update(memory.slice(0, 64)).update(vmsas[0]!).update(vmsas[1]!).digest();
    expect(verifyMeasurement(m, s.keys.tik, platform.build, esPolicy, digest)).to.equal(true);
  });

  describe('LAUNCH_SECRET', () => {
    const secretAt = 0x6000;
    const table = buildSecretTable([{ guid: '736869e5-84f0-4973-92ec-06879ce3da0b', data: Buffer.from('correct horse battery staple') }]);

    it('decrypts a packet bound to the measurement into guest memory', () => {
      const sim = started();
      const m = parseMeasurement(sim.launchMeasure());
      sim.launchSecret(buildSecretPacket(owner.keys, m.measure, table), memory, secretAt);
      expect(parseSecretTable(memory.read(secretAt, table.length))[0]!.data).to.deep.equal(Uint8Array.from(Buffer.from('correct horse battery staple')));
    });

    it('refuses a secret with a wrong MAC', () => {
      const sim = started();
      const m = parseMeasurement(sim.launchMeasure());
      const packet = buildSecretPacket(owner.keys, m.measure, table);
      packet.header[30]! ^= 1;
      expectStatus(() => sim.launchSecret(packet, memory, secretAt), 'LAUNCH_SECRET', 'BAD_MEASUREMENT');
      const forOtherLaunch = buildSecretPacket(owner.keys, Buffer.alloc(32, 7), table);
      expectStatus(() => sim.launchSecret(forOtherLaunch, memory, secretAt), 'LAUNCH_SECRET', 'BAD_MEASUREMENT');
      expect(memory.read(secretAt, table.length).every((b) => b === 0)).to.equal(true);
    });

    it('refuses a secret before LAUNCH_MEASURE and after LAUNCH_FINISH', () => {
      const sim = started();
      const early = buildSecretPacket(owner.keys, Buffer.alloc(32), table);
      expectStatus(() => sim.launchSecret(early, memory, secretAt), 'LAUNCH_SECRET', 'INVALID_GUEST_STATE');
      const m = parseMeasurement(sim.launchMeasure());
      sim.launchFinish();
      expectStatus(() => sim.launchSecret(buildSecretPacket(owner.keys, m.measure, table), memory, secretAt), 'LAUNCH_SECRET', 'INVALID_GUEST_STATE');
    });

    it('checks header length, payload length and the guest address', () => {
      const sim = started();
      const m = parseMeasurement(sim.launchMeasure());
      const packet = buildSecretPacket(owner.keys, m.measure, table);
      expectStatus(() => sim.launchSecret({ ...packet, header: packet.header.subarray(0, 48) }, memory, secretAt), 'LAUNCH_SECRET', 'INVALID_LEN');
      expectStatus(() => sim.launchSecret(buildSecretPacket(owner.keys, m.measure, Buffer.alloc(20)), memory, secretAt), 'LAUNCH_SECRET', 'INVALID_LEN');
      expectStatus(() => sim.launchSecret(packet, memory, secretAt + 4), 'LAUNCH_SECRET', 'INVALID_ADDRESS');
      expectStatus(() => sim.launchSecret(packet, memory, 0x10_0000), 'LAUNCH_SECRET', 'INVALID_ADDRESS');
    });
  });
});
