import { expect } from 'chai';
import { measuredLaunch, SEV_SECRET_PAGE } from '../../src/sev/launch.js';
import { parseMeasurement, verifyMeasurement } from '../../src/sev/measurement.js';
import { PolicyBit } from '../../src/sev/policy.js';
import { buildSecretPacket, buildSecretTable, parseSecretTable } from '../../src/sev/secret.js';
import { createSession } from '../../src/sev/session.js';
import { SevSimulator, SimulatedPlatform } from '../../src/sev/sev-sim.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { predictTsVmmLaunchDigest, tsVmmLaunchImage } from '../../src/sev/ts-vmm-launch.js';
import { E820Type } from '../../src/boot/boot-params-abi.js';
import { prepareBoot } from '../../src/boot/prepare.js';
import { measuredBootInputs, type MeasuredBootInputs } from '../../src/sev/ts-vmm-launch.js';

/** A minimal x86-64 ELF vmlinux: one PT_LOAD segment at 1 MiB whose first byte is the entry point. */
function tinyVmlinux(body: Uint8Array): Buffer {
  const file = Buffer.alloc(0x1000 + body.length);
  file.writeUInt32LE(0x464c457f, 0);
  file[4] = 2;
  file[5] = 1;
  file[6] = 1;
  file.writeUInt16LE(2, 16);
  file.writeUInt16LE(62, 18);
  file.writeUInt32LE(1, 20);
  file.writeBigUInt64LE(0x10_0000n, 24);
  file.writeBigUInt64LE(64n, 32);
  file.writeUInt16LE(64, 52);
  file.writeUInt16LE(56, 54);
  file.writeUInt16LE(1, 56);
  file.writeUInt32LE(1, 64);
  file.writeUInt32LE(7, 68);
  file.writeBigUInt64LE(0x1000n, 72);
  file.writeBigUInt64LE(0xffffffff81000000n, 80);
  file.writeBigUInt64LE(0x10_0000n, 88);
  file.writeBigUInt64LE(BigInt(body.length), 96);
  file.writeBigUInt64LE(BigInt(body.length), 104);
  file.set(body, 0x1000);
  return file;
}

describe('sev: ts-vmm launch image from the boot plan', () => {
  const inputs: MeasuredBootInputs = {
    kernel: tinyVmlinux(Buffer.alloc(0x2345, 0xf4)),
    initrd: Buffer.alloc(0x1_0000, 0x42),
    cmdline: 'console=ttyS0 panic=-1',
    cpus: 2,
    memoryMiB: 64,
    virtioDevices: 1,
  };

  it('enters through the firmware and reserves exactly the secret page in the e820 map', async () => {
    const boot = await prepareBoot(measuredBootInputs(inputs));
    expect(boot.entry).to.equal('firmware');
    expect(boot.plan.e820).to.deep.include({ addr: SEV_SECRET_PAGE, size: 0x1000, type: E820Type.RESERVED });
    const ram = boot.plan.e820.filter((e) => e.type === E820Type.RAM);
    expect(
      ram.some((e) => e.addr < SEV_SECRET_PAGE + 0x1000 && SEV_SECRET_PAGE < e.addr + e.size),
      'no RAM entry covers the secret page',
    ).to.equal(false);
    expect(
      ram.some((e) => e.addr === 0 && e.size === SEV_SECRET_PAGE),
      'RAM below the secret page stays usable',
    ).to.equal(true);
    const plain = await prepareBoot({ ...inputs, entry: 'firmware' });
    expect(plain.plan.e820.some((e) => e.addr === SEV_SECRET_PAGE)).to.equal(false);
  });

  it('measures every placement of the boot plan under its kind', async () => {
    const image = await tsVmmLaunchImage(inputs);
    const kinds = new Set(image.regions.map((r) => r.kind));
    for (const k of ['firmware', 'kernel', 'initrd', 'zero-page', 'cmdline', 'acpi', 'boot-data'] as const) expect(kinds.has(k), k).to.equal(true);
  });

  it('predicts what the launch measures; one byte of initrd or command line changes it', async () => {
    const identity = SimulatedIdentity.generate({ caBits: 2048 });
    const platform = new SimulatedPlatform(identity);
    const policy = PolicyBit.NODBG | PolicyBit.NOKS;
    const owner = createSession(identity.chain.pdh, policy);
    const predicted = await predictTsVmmLaunchDigest(inputs);

    const image = await tsVmmLaunchImage(inputs);
    const table = buildSecretTable([{ guid: 'e6f5a162-d67f-4750-a67c-5d065f2a9910', data: Buffer.from('secret for init') }]);
    const result = await measuredLaunch({
      backend: new SevSimulator(platform, { warn: () => undefined }),
      image,
      policy,
      session: { godh: owner.godh.bytes, session: owner.session },
      secret: (blob) => {
        const m = parseMeasurement(blob);
        return verifyMeasurement(m, owner.keys.tik, platform.build, policy, predicted) ? buildSecretPacket(owner.keys, m.measure, table) : undefined;
      },
    });
    expect(result.secretInjected).to.equal(true);
    expect(parseSecretTable(image.memory.read(SEV_SECRET_PAGE, table.length))[0]!.data).to.deep.equal(Uint8Array.from(Buffer.from('secret for init')));

    const initrd = Buffer.from(inputs.initrd!);
    initrd[100] = 0;
    expect(await predictTsVmmLaunchDigest({ ...inputs, initrd })).to.not.deep.equal(predicted);
    expect(await predictTsVmmLaunchDigest({ ...inputs, cmdline: 'console=ttyS0 panic=-2' })).to.not.deep.equal(predicted);
    expect(await predictTsVmmLaunchDigest({ ...inputs, cpus: 3 })).to.not.deep.equal(predicted);
  });
});
