import { expect } from 'chai';
import fc from 'fast-check';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import {
  LaunchLayoutError,
  MEASUREMENT_ORDER,
  SEV_SECRET_PAGE,
  launchDigest,
  measuredLaunch,
  measuredRanges,
  predictLaunchDigest,
  type LaunchImage,
  type PlacedRegion,
} from '../../src/sev/launch.js';
import { parseMeasurement, verifyMeasurement, computeMeasure } from '../../src/sev/measurement.js';
import { PolicyBit } from '../../src/sev/policy.js';
import { buildSecretPacket, buildSecretTable, parseSecretTable } from '../../src/sev/secret.js';
import { createSession } from '../../src/sev/session.js';
import { SevSimulator, SimulatedPlatform } from '../../src/sev/sev-sim.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { verifyChain } from '../../src/sev/chain.js';
import type { GuestStatus, LaunchStart, SevLaunchBackend } from '../../src/sev/firmware.js';
import type { SecretPacket } from '../../src/sev/secret.js';

const MiB = 0x10_0000;

/** A small image laid out the way the boot code places a Linux guest. */
function image(kernel: Uint8Array, initrd: Uint8Array, cmdline: string): LaunchImage {
  const memory = GuestMemory.shared([{ guestAddress: 0, size: 16 * MiB }]);
  const firmware = Buffer.alloc(4096, 0x90);
  const zeroPage = Buffer.alloc(4096);
  zeroPage.write('HdrS', 0x202);
  const cmd = Buffer.from(`${cmdline}\0`);
  memory.write(0xf_0000, firmware);
  memory.write(0x7000, zeroPage);
  memory.write(0x2_0000, cmd);
  memory.write(MiB, kernel);
  memory.write(8 * MiB, initrd);
  const regions: PlacedRegion[] = [
    { kind: 'initrd', guestAddress: 8 * MiB, length: initrd.length },
    { kind: 'cmdline', guestAddress: 0x2_0000, length: cmd.length },
    { kind: 'kernel', guestAddress: MiB, length: kernel.length },
    { kind: 'zero-page', guestAddress: 0x7000, length: zeroPage.length },
    { kind: 'firmware', guestAddress: 0xf_0000, length: firmware.length },
  ];
  return { memory, regions };
}

describe('sev: measured launch', () => {
  describe('measuredRanges', () => {
    const memory = GuestMemory.shared([{ guestAddress: 0, size: 4 * MiB }]);

    it('orders by kind (firmware, kernel, initrd, zero-page, cmdline, acpi) and aligns to 16 bytes', () => {
      const ranges = measuredRanges(
        [
          { kind: 'acpi', guestAddress: 0xe_0000, length: 36 },
          { kind: 'cmdline', guestAddress: 0x2_0003, length: 10 },
          { kind: 'firmware', guestAddress: 0xf_0000, length: 0x1000 },
          { kind: 'acpi', guestAddress: 0xe_1000, length: 20 },
        ],
        memory,
      );
      expect(ranges).to.deep.equal([
        { kind: 'firmware', guestAddress: 0xf_0000, length: 0x1000 },
        { kind: 'cmdline', guestAddress: 0x2_0000, length: 16 },
        { kind: 'acpi', guestAddress: 0xe_0000, length: 48 },
        { kind: 'acpi', guestAddress: 0xe_1000, length: 32 },
      ]);
    });

    it('refuses regions that overlap once aligned, leave guest RAM, or cover the secret page', () => {
      expect(() =>
        measuredRanges(
          [
            { kind: 'kernel', guestAddress: 0x10_0000, length: 0x11 },
            { kind: 'initrd', guestAddress: 0x10_0018, length: 8 },
          ],
          memory,
        ),
      ).to.throw(LaunchLayoutError, 'overlap');
      expect(() => measuredRanges([{ kind: 'initrd', guestAddress: 4 * MiB - 8, length: 16 }], memory)).to.throw(LaunchLayoutError, 'not inside guest RAM');
      expect(() => measuredRanges([{ kind: 'acpi', guestAddress: SEV_SECRET_PAGE + 0x100, length: 16 }], memory)).to.throw(LaunchLayoutError, 'secret page');
      expect(() => measuredRanges([{ kind: 'bios' as 'acpi', guestAddress: 0x1000, length: 16 }], memory)).to.throw(LaunchLayoutError, 'unknown region kind');
    });

    it('always yields aligned, ordered, disjoint ranges covering every placed byte (property)', () => {
      const region = fc.record({
        kind: fc.constantFrom(...MEASUREMENT_ORDER),
        guestAddress: fc.integer({ min: 0x8000, max: 4 * MiB - 0x2000 }),
        length: fc.integer({ min: 1, max: 0x1000 }),
      });
      fc.assert(
        fc.property(fc.array(region, { maxLength: 8 }), (regions) => {
          let ranges: ReturnType<typeof measuredRanges>;
          try {
            ranges = measuredRanges(regions, memory);
          } catch (e) {
            expect(e).to.be.instanceOf(LaunchLayoutError);
            return;
          }
          const order = ranges.map((r) => MEASUREMENT_ORDER.indexOf(r.kind));
          expect(order).to.deep.equal([...order].sort((a, b) => a - b));
          for (const r of ranges) expect(r.guestAddress % 16 === 0 && r.length % 16 === 0).to.equal(true);
          const sorted = [...ranges].sort((a, b) => a.guestAddress - b.guestAddress);
          for (let i = 1; i < sorted.length; i++) expect(sorted[i]!.guestAddress).to.be.at.least(sorted[i - 1]!.guestAddress + sorted[i - 1]!.length);
          for (const p of regions) {
            expect(ranges.some((r) => r.guestAddress <= p.guestAddress && p.guestAddress + p.length <= r.guestAddress + r.length)).to.equal(true);
          }
        }),
        { numRuns: 300 },
      );
    });
  });

  describe('end to end with sev-sim over shared guest memory', () => {
    let identity: SimulatedIdentity;
    before(() => {
      identity = SimulatedIdentity.generate({ caBits: 2048 });
    });

    it('owner session -> VMM launch -> measurement verifies -> secret lands in the reserved page', async () => {
      const platform = new SimulatedPlatform(identity);
      // Owner: verify the platform, make a session for its PDH, predict the digest from the same image.
      const pdh = verifyChain(identity.chain);
      const policy = PolicyBit.NODBG | PolicyBit.NOKS | PolicyBit.NOSEND;
      const owner = createSession(pdh, policy);
      const kernel = Buffer.alloc(0x3001, 0xcc);
      const initrd = Buffer.alloc(0x2_0000, 0x5a);
      const predicted = predictLaunchDigest(image(kernel, initrd, 'console=ttyS0 quiet'));

      // VMM: launch the same image on the simulated firmware; the owner answers the measurement with a secret.
      const vm = image(kernel, initrd, 'console=ttyS0 quiet');
      const table = buildSecretTable([{ guid: '736869e5-84f0-4973-92ec-06879ce3da0b', data: Buffer.from('luks passphrase') }]);
      let verified = false;
      const result = await measuredLaunch({
        backend: new SevSimulator(platform, { warn: () => undefined }),
        image: vm,
        policy,
        session: { godh: owner.godh.bytes, session: owner.session },
        secret: (blob) => {
          const m = parseMeasurement(blob);
          verified = verifyMeasurement(m, owner.keys.tik, platform.platformStatus(), policy, predicted);
          return verified ? buildSecretPacket(owner.keys, m.measure, table) : undefined;
        },
      });
      expect(verified).to.equal(true);
      expect(result.secretInjected).to.equal(true);
      expect(parseSecretTable(vm.memory.read(SEV_SECRET_PAGE, table.length))[0]!.data).to.deep.equal(Uint8Array.from(Buffer.from('luks passphrase')));
    });

    it('one byte changed in the initrd or the command line changes the measurement', () => {
      const kernel = Buffer.alloc(0x2000, 1);
      const initrd = Buffer.alloc(0x4000, 2);
      const base = predictLaunchDigest(image(kernel, initrd, 'root=/dev/vda'));
      const initrd2 = Buffer.from(initrd);
      initrd2[0x3fff] = 3;
      expect(predictLaunchDigest(image(kernel, initrd2, 'root=/dev/vda'))).to.not.deep.equal(base);
      expect(predictLaunchDigest(image(kernel, initrd, 'root=/dev/vdb'))).to.not.deep.equal(base);
      expect(predictLaunchDigest(image(kernel, initrd, 'root=/dev/vda'))).to.deep.equal(base);
    });

    it('issues the commands in firmware order, VMSAs for SEV-ES, and skips the secret when the owner sends none', async () => {
      const calls: string[] = [];
      const im = image(Buffer.alloc(64, 1), Buffer.alloc(64, 2), 'x');
      im.vmsas = [new Uint8Array(4096), new Uint8Array(4096)];
      const recorder: SevLaunchBackend = {
        kind: 'sev-sim',
        platform: new SimulatedPlatform(identity),
        init: (es: boolean) => {
          calls.push(es ? 'ES_INIT' : 'INIT');
        },
        launchStart: (s: LaunchStart) => {
          calls.push(`LAUNCH_START ${s.policy}`);
          return 1;
        },
        launchUpdateData: (_m: GuestMemory, a: number, l: number) => {
          calls.push(`LAUNCH_UPDATE_DATA ${a.toString(16)}+${l}`);
        },
        launchUpdateVmsa: (v: readonly Uint8Array[]) => {
          calls.push(`LAUNCH_UPDATE_VMSA ${v.length}`);
        },
        launchMeasure: () => {
          calls.push('LAUNCH_MEASURE');
          return new Uint8Array(48);
        },
        launchSecret: (_p: SecretPacket) => {
          calls.push('LAUNCH_SECRET');
        },
        launchFinish: () => {
          calls.push('LAUNCH_FINISH');
        },
        guestStatus: (): GuestStatus => ({ handle: 1, policy: 0, state: 'RUNNING' }),
      };
      const r = await measuredLaunch({ backend: recorder, image: im, policy: PolicyBit.ES, secret: () => undefined });
      expect(r.secretInjected).to.equal(false);
      expect(calls).to.deep.equal([
        'ES_INIT',
        'LAUNCH_START 4',
        'LAUNCH_UPDATE_DATA f0000+4096',
        'LAUNCH_UPDATE_DATA 100000+64',
        'LAUNCH_UPDATE_DATA 800000+64',
        'LAUNCH_UPDATE_DATA 7000+4096',
        'LAUNCH_UPDATE_DATA 20000+16',
        'LAUNCH_UPDATE_VMSA 2',
        'LAUNCH_MEASURE',
        'LAUNCH_FINISH',
      ]);
    });

    it('the simulator measures exactly what the owner predicts, including SEV-ES VMSAs', async () => {
      const platform = new SimulatedPlatform(identity);
      const policy = PolicyBit.ES | PolicyBit.NODBG;
      const owner = createSession(identity.chain.pdh, policy);
      const im = image(Buffer.alloc(0x1234, 9), Buffer.alloc(0x777, 8), 'console=hvc0');
      im.vmsas = [new Uint8Array(4096).fill(0xaa), new Uint8Array(4096).fill(0xbb)];
      const digest = launchDigest(im.memory, measuredRanges(im.regions, im.memory), im.vmsas);
      const r = await measuredLaunch({
        backend: new SevSimulator(platform, { warn: () => undefined }),
        image: im,
        policy,
        session: { godh: owner.godh.bytes, session: owner.session },
      });
      const m = parseMeasurement(r.measurement);
      expect(Buffer.from(m.measure)).to.deep.equal(computeMeasure(owner.keys.tik, platform.build, policy, digest, m.mnonce));
    });
  });
});
