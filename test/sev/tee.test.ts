import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { measuredLaunch, SEV_SECRET_PAGE } from '../../src/sev/launch.js';
import { parseMeasurement } from '../../src/sev/measurement.js';
import { writeSecretPacket } from '../../src/sev/owner-files.js';
import { buildSecretPacket } from '../../src/sev/secret.js';
import { createSession } from '../../src/sev/session.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';
import { openLaunchBackend, secretThroughFiles } from '../../src/sev/tee.js';
import type { EncryptingVm } from '../../src/sev/kvm-sev.js';

const noVm: EncryptingVm = {
  memoryEncryptOp: () => {
    throw new Error('sev-sim must not reach KVM');
  },
  registerEncryptedRegion: () => {
    throw new Error('sev-sim must not reach KVM');
  },
};

describe('sev: --tee plumbing', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-tee-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('exchanges the measurement and the secret through files with an owner working in parallel', async () => {
    const state = path.join(dir, 'sim');
    SimulatedIdentity.loadOrCreate(state, { caBits: 2048 });
    const opened = openLaunchBackend('sev-sim', noVm, state);
    const owner = createSession(SimulatedIdentity.load(state).chain.pdh, 0);
    const files = {
      measurementFile: path.join(dir, 'm.bin'),
      headerFile: path.join(dir, 'h.bin'),
      payloadFile: path.join(dir, 'p.bin'),
      timeoutMs: 10_000,
      pollMs: 10,
    };
    const memory = GuestMemory.shared([{ guestAddress: 0, size: 0x10_0000 }]);
    memory.fill(0x8000, 32, 0x11);

    // The owner: waits for the measurement, answers with a packet (written as `sev secret build` writes it).
    const ownerSide = (async () => {
      for (;;) {
        try {
          const m = parseMeasurement(readFileSync(files.measurementFile));
          writeSecretPacket(files.headerFile, files.payloadFile, buildSecretPacket(owner.keys, m.measure, Buffer.alloc(32, 0x77)));
          return;
        } catch {
          await new Promise((r) => setTimeout(r, 10));
        }
      }
    })();
    let vcpusCreated = false;
    const result = await measuredLaunch({
      backend: opened.backend,
      policy: 0,
      session: { godh: owner.godh.bytes, session: owner.session },
      image: { memory, regions: [{ kind: 'kernel', guestAddress: 0x8000, length: 32 }] },
      secret: secretThroughFiles(files),
      createVcpus: () => {
        vcpusCreated = true;
      },
    });
    await ownerSide;
    opened.close();
    expect(vcpusCreated).to.equal(true);
    expect(result.secretInjected).to.equal(true);
    expect(Buffer.from(memory.read(SEV_SECRET_PAGE, 32))).to.deep.equal(Buffer.alloc(32, 0x77));
  });

  it('launches without a secret when the owner does not answer in time', async () => {
    const source = secretThroughFiles({
      measurementFile: path.join(dir, 'm.bin'),
      headerFile: path.join(dir, 'h.bin'),
      payloadFile: path.join(dir, 'p.bin'),
      timeoutMs: 50,
      pollMs: 10,
    });
    expect(await source(new Uint8Array(48).fill(1))).to.equal(undefined);
    expect(readFileSync(path.join(dir, 'm.bin'))).to.deep.equal(Buffer.alloc(48, 1));
  });

  it('needs a state directory for sev-sim', () => {
    expect(() => openLaunchBackend('sev-sim', noVm)).to.throw('state directory');
  });
});
