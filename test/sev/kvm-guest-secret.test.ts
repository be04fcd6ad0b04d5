// On real KVM: the measured launch on sev-sim over the VM's own guest RAM, then the guest reads the
// injected secret from the secret page and writes it to a port. sev-sim does not encrypt, so the guest
// sees the plaintext the firmware model wrote.
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { measuredLaunch, SEV_SECRET_PAGE } from '../../src/sev/launch.js';
import { parseMeasurement, verifyMeasurement } from '../../src/sev/measurement.js';
import { PolicyBit } from '../../src/sev/policy.js';
import { buildSecretPacket } from '../../src/sev/secret.js';
import { createSession } from '../../src/sev/session.js';
import { SevSimulator, SimulatedPlatform } from '../../src/sev/sev-sim.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { realModeVm } from '../kvm/real-mode-vm.js';

const DEBUG_PORT = 0xe9;
// mov si, SEV_SECRET_PAGE; mov cx, 16; mov dx, 0xe9; cld; rep outsb; hlt
const readSecret = [0xbe, SEV_SECRET_PAGE & 0xff, SEV_SECRET_PAGE >> 8, 0xb9, 0x10, 0x00, 0xba, DEBUG_PORT, 0x00, 0xfc, 0xf3, 0x6e, 0xf4];

describe('sev: sev-sim launch of a KVM guest that reads its secret @kvm', () => {
  it('the guest reads exactly the secret the owner sent after verifying the measurement', async () => {
    const guest = realModeVm(readSecret);
    try {
      const platform = new SimulatedPlatform(SimulatedIdentity.generate({ caBits: 2048 }));
      const policy = PolicyBit.NODBG;
      const owner = createSession(platform.pdhCertExport().pdh, policy);
      const code = { kind: 'firmware' as const, guestAddress: 0x1000, length: 16 };
      const predicted = createHash('sha256').update(guest.memory.read(0x1000, 16)).digest();
      const secret = Buffer.from('0123456789abcdef');
      const result = await measuredLaunch({
        backend: new SevSimulator(platform, { warn: () => undefined }),
        image: { memory: guest.memory, regions: [code] },
        policy,
        session: { godh: owner.godh.bytes, session: owner.session },
        secret: (blob) => {
          const m = parseMeasurement(blob);
          if (!verifyMeasurement(m, owner.keys.tik, platform.build, policy, predicted)) return undefined;
          return buildSecretPacket(owner.keys, m.measure, secret);
        },
      });
      expect(result.secretInjected).to.equal(true);

      const seen: number[] = [];
      for (let exits = 0; exits < 64; exits++) {
        const exit = guest.vcpus[0]!.run();
        if (exit.kind === 'hlt') break;
        expect(exit.kind).to.equal('io');
        if (exit.kind === 'io') {
          expect(exit.port).to.equal(DEBUG_PORT);
          seen.push(...exit.data.subarray(0, exit.size * exit.count));
        }
      }
      expect(Buffer.from(seen).toString()).to.equal('0123456789abcdef');
    } finally {
      guest.close();
    }
  });
});
