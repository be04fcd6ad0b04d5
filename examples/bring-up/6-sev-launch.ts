// Step 6: a measured confidential launch on sev-sim, the project's software model of the AMD SEV
// firmware (it runs the launch protocol exactly but does not encrypt guest memory). The guest owner
// makes a session with the platform's key, predicts the measurement from the image it expects, checks
// the measurement the firmware reports, and only then sends a secret, which the firmware puts in the
// guest's secret page. A tiny guest then reads it back. `node 6-sev-launch.js tamper` has the host change
// one byte of the guest after the owner's prediction: watch the owner refuse to send the secret.
import { createHash, randomBytes } from 'node:crypto';
import { measuredLaunch, predictLaunchDigest, SEV_SECRET_PAGE, type PlacedRegion } from '../../src/sev/launch.js';
import { parseMeasurement, verifyMeasurement } from '../../src/sev/measurement.js';
import { PolicyBit } from '../../src/sev/policy.js';
import { buildSecretPacket } from '../../src/sev/secret.js';
import { createSession } from '../../src/sev/session.js';
import { SevSimulator, SimulatedPlatform } from '../../src/sev/sev-sim.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { failInOneLine, hex, realModeGuest } from './guest-vm.js';

failInOneLine();

const ENTRY = 0x1000;
const PORT = 0xe9;
const SECRET_BYTES = 16;
const tamper = process.argv[2] === 'tamper';
// 16-bit code: mov si, secret page; mov cx, 16; mov dx, 0xe9; cld; rep outsb; hlt
const code = [0xbe, SEV_SECRET_PAGE & 0xff, SEV_SECRET_PAGE >> 8, 0xb9, SECRET_BYTES, 0x00, 0xba, PORT, 0x00, 0xfc, 0xf3, 0x6e, 0xf4];
const regions: PlacedRegion[] = [{ kind: 'firmware', guestAddress: ENTRY, length: code.length }];
// A fingerprint, so that no secret byte reaches the output: what the owner sent and what the guest read compare equal.
const fingerprint = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex').slice(0, 16);

console.log('platform: sev-sim generates its identity (OCA, PEK, PDH; 2048-bit CAs to keep it quick)');
const platform = new SimulatedPlatform(SimulatedIdentity.generate({ caBits: 2048 }));
const policy = PolicyBit.NODBG | PolicyBit.NOKS;
console.log(`owner: policy ${hex(policy)} (no debugging, no key sharing)`);
const owner = createSession(platform.pdhCertExport().pdh, policy);
console.log(`owner: session made for the platform's PDH: GODH certificate (${owner.godh.bytes.length} bytes) and session blob (${owner.session.length} bytes)`);
console.log('owner: the transport keys (TEK, TIK) are wrapped inside the session blob; only this platform can unwrap them');

// The owner lays out the image it expects in memory of its own and walks the same function the launch measures with.
const expected = GuestMemory.anonymous([{ guestAddress: 0, size: 0x10000 }]);
expected.write(ENTRY, Uint8Array.from(code));
const predicted = predictLaunchDigest({ memory: expected, regions });
console.log(`owner: predicted launch digest ${predicted.toString('hex')} (SHA-256 of the ${code.length} code bytes, 16-byte aligned)`);

const guest = realModeGuest(code, ENTRY);
if (tamper) {
  guest.memory.writeU8(ENTRY + 7, PORT + 1);
  console.log(`host: changed one byte of the guest at ${hex(ENTRY + 7)} after the owner's prediction`);
}
const secret = randomBytes(SECRET_BYTES);
let status = 1;
try {
  const result = await measuredLaunch({
    backend: new SevSimulator(platform, { warn: (m) => console.log(m) }),
    image: { memory: guest.memory, regions },
    policy,
    session: { godh: owner.godh.bytes, session: owner.session },
    secret: (blob) => {
      const m = parseMeasurement(blob);
      console.log(`firmware: LAUNCH_MEASURE = HMAC(TIK, ... digest ... nonce) ${Buffer.from(m.measure).toString('hex')}`);
      if (!verifyMeasurement(m, owner.keys.tik, platform.build, policy, predicted)) {
        console.log('owner: measurement does not match the prediction: no secret for this guest');
        return undefined;
      }
      console.log('owner: measurement verified: the guest is the image predicted, on a platform holding the session keys');
      console.log(`owner: sends a ${SECRET_BYTES}-byte secret (fingerprint ${fingerprint(secret)}), encrypted with the TEK`);
      return buildSecretPacket(owner.keys, m.measure, secret);
    },
  });
  console.log(`firmware: launch finished, handle ${result.handle}; secret injected at ${hex(SEV_SECRET_PAGE)}: ${result.secretInjected ? 'yes' : 'no'}`);

  const seen: number[] = [];
  for (let exits = 0; exits < 64; exits++) {
    const exit = guest.vcpu.run();
    if (exit.kind === 'hlt') break;
    if (exit.kind !== 'io') throw new Error(`unexpected exit ${exit.kind}`);
    seen.push(...exit.data.subarray(0, exit.size * exit.count));
  }
  const readBack = Uint8Array.from(seen);
  const match = readBack.length === SECRET_BYTES && Buffer.from(readBack).equals(secret);
  console.log(`guest: read ${readBack.length} bytes from its secret page (fingerprint ${fingerprint(readBack)})`);
  console.log(`the guest read back the owner's secret: ${match ? 'yes' : 'no'}`);
  // Plain: the secret must arrive. With `tamper`: it must not.
  status = (tamper ? !result.secretInjected && !match : result.secretInjected && match) ? 0 : 1;
} finally {
  guest.close();
}
process.exitCode = status;
