// A key broker on loopback for tests and the benchmark: a temporary store, a sev-sim platform as the only
// trust anchor, an admin token, and a clock the test can move.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AuditLog } from '../../src/kbs/audit.js';
import { Broker, tokenDigest } from '../../src/kbs/broker.js';
import { KbsClient } from '../../src/kbs/client.js';
import { createKbsServer } from '../../src/kbs/server.js';
import { WorkloadStore } from '../../src/kbs/store.js';
import { TrustStore, loadTrustAnchor } from '../../src/kbs/trust.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { predictLaunchDigest, type LaunchImage } from '../../src/sev/launch.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface TestKbs {
  dir: string;
  identity: SimulatedIdentity;
  url: string;
  client: KbsClient;
  broker: Broker;
  server: Server;
  /** Milliseconds added to the broker's clock. */
  clock: { skew: number };
  auditLines(): Record<string, unknown>[];
  close(): Promise<void>;
}

export async function startTestKbs(identity = SimulatedIdentity.generate({ caBits: 2048 }), options: { sessionTtlMs?: number } = {}): Promise<TestKbs> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-kbs-'));
  const simDir = path.join(dir, 'sim');
  identity.save(simDir);
  const clock = { skew: 0 };
  const audit = new AuditLog(path.join(dir, 'audit.log'), true);
  const broker = new Broker({
    store: new WorkloadStore(path.join(dir, 'store')),
    trust: new TrustStore([loadTrustAnchor(simDir)]),
    audit,
    adminTokenDigest: tokenDigest(ADMIN_TOKEN),
    sessionTtlMs: options.sessionTtlMs,
    now: () => Date.now() + clock.skew,
  });
  const server = createKbsServer({ broker });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    dir,
    identity,
    url,
    broker,
    server,
    clock,
    client: new KbsClient({ url }),
    auditLines: () =>
      readFileSync(path.join(dir, 'audit.log'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      audit.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const MiB = 0x10_0000;

/** A small guest image as the boot code lays one out; `variant` changes one byte of the kernel. */
export function testImage(variant = 0): LaunchImage {
  const memory = GuestMemory.shared([{ guestAddress: 0, size: 4 * MiB }]);
  const firmware = Buffer.alloc(4096, 0x90);
  const kernel = Buffer.alloc(0x3000, 0xcc);
  kernel[0x1234] = variant;
  const zeroPage = Buffer.alloc(4096);
  zeroPage.write('HdrS', 0x202);
  memory.write(0xf_0000, firmware);
  memory.write(0x7000, zeroPage);
  memory.write(MiB, kernel);
  return {
    memory,
    regions: [
      { kind: 'firmware', guestAddress: 0xf_0000, length: firmware.length },
      { kind: 'kernel', guestAddress: MiB, length: kernel.length },
      { kind: 'zero-page', guestAddress: 0x7000, length: zeroPage.length },
    ],
  };
}

export const testDigest = (variant = 0): Buffer => predictLaunchDigest(testImage(variant));
