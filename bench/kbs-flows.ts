// Key broker throughput: complete auth -> attest -> key flows from concurrent clients on loopback, each with a
// real sev-sim launch (LAUNCH_START with the broker's session, LAUNCH_MEASURE, LAUNCH_SECRET of the packet it
// sends). The server is `ts-vmm kbs serve` as its own process; its CPU time (from /proc) per flow is set beside
// the floor, the cryptography a broker cannot avoid per flow, timed in this process: a P-384 key pair and ECDH,
// the KDFs, wrap and policy HMACs and AES of the session, the measurement HMAC, the secret's AES and HMAC.
//   node dist/bench/kbs-flows.js [flows=1000] [clients=50]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { KbsClient } from '../src/kbs/client.js';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { measuredLaunch, predictLaunchDigest, SEV_SECRET_PAGE, type LaunchImage } from '../src/sev/launch.js';
import { computeMeasure, verifyMeasurement } from '../src/sev/measurement.js';
import { buildSecretPacket } from '../src/sev/secret.js';
import { createSession } from '../src/sev/session.js';
import { SevSimulator, SimulatedPlatform } from '../src/sev/sev-sim.js';
import { SimulatedIdentity } from '../src/sev/sim-identity.js';
import { cpuTimes } from '../src/sys/cpu-times.js';
import { cliEntry } from '../src/sys/project-paths.js';

const flows = Number(process.argv[2] ?? 1000);
const clients = Number(process.argv[3] ?? 50);
const PASSPHRASE = 'bench passphrase';

const dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-kbs-bench-'));
const identity = SimulatedIdentity.generate({ caBits: 4096 });
identity.save(path.join(dir, 'sim'));
writeFileSync(path.join(dir, 'token'), 'bench-token', { mode: 0o600 });
const platform = new SimulatedPlatform(identity);

function image(): LaunchImage {
  const memory = GuestMemory.shared([{ guestAddress: 0, size: 0x10_0000 }]);
  memory.write(0xf_0000, Buffer.alloc(0x1_0000, 0x90));
  return { memory, regions: [{ kind: 'firmware', guestAddress: 0xf_0000, length: 0x1_0000 }] };
}

/** The floor: what one flow's cryptography costs the broker, in ms. */
function floorMs(): number {
  const pdh = identity.chain.pdh;
  const digest = Buffer.alloc(32, 7);
  const secret = Buffer.alloc(512, 1);
  const rounds = 300;
  const start = performance.now();
  for (let i = 0; i < rounds; i++) {
    const s = createSession(pdh, 3);
    const mnonce = Buffer.alloc(16, i & 0xff);
    const measure = computeMeasure(s.keys.tik, platform.build, 3, digest, mnonce);
    if (!verifyMeasurement({ measure, mnonce }, s.keys.tik, platform.build, 3, digest)) throw new Error('floor: measurement');
    buildSecretPacket(s.keys, measure, secret);
  }
  // computeMeasure is the firmware's share; verifying is a second HMAC of the same size, so count it once.
  return (performance.now() - start) / rounds;
}

async function main(): Promise<void> {
  const child = spawn(
    process.execPath,
    [
      cliEntry(),
      'kbs',
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--store',
      path.join(dir, 'store'),
      '--trust-ark',
      path.join(dir, 'sim'),
      '--admin-token-file',
      path.join(dir, 'token'),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        const m = /listening on (http:\/\/[^,]+),/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.on('exit', (code) => reject(new Error(`kbs serve exited ${code}`)));
    });
    const client = new KbsClient({ url });
    await client.register('bench-token', { workloadId: 'bench', launchDigest: predictLaunchDigest(image()), policy: 3, passphrase: PASSPHRASE });

    const flow = async (): Promise<number> => {
      const t0 = performance.now();
      const session = await client.auth('bench', platform.build, identity.chain);
      const im = image();
      await measuredLaunch({
        backend: new SevSimulator(platform, { warn: () => undefined }),
        image: im,
        policy: session.launch.policy,
        session: { godh: session.launch.godh, session: session.launch.session },
        secret: (m) => session.secretFor(m),
      });
      if (Buffer.from(im.memory.read(SEV_SECRET_PAGE, PASSPHRASE.length)).toString() !== PASSPHRASE) throw new Error('the secret did not open in the guest');
      return performance.now() - t0;
    };

    await Promise.all(Array.from({ length: 10 }, flow)); // warm up: JIT, the chain's verification (cached after)
    const latencies: number[] = [];
    let errors = 0;
    let next = 0;
    const cpu0 = cpuTimes(`/proc/${child.pid}/stat`).total;
    const start = performance.now();
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (next < flows) {
          next++;
          try {
            latencies.push(await flow());
          } catch (e) {
            errors++;
            if (errors <= 3) console.error(`flow failed: ${(e as Error).message}`);
          }
        }
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    const serverCpuMs = (cpuTimes(`/proc/${child.pid}/stat`).total - cpu0) / flows;
    const floor = floorMs();
    latencies.sort((a, b) => a - b);
    const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
    console.log(`kbs-flows: ${flows} auth -> attest -> key flows, ${clients} concurrent clients, loopback, sev-sim launches`);
    console.log(`  errors                 ${errors}`);
    console.log(`  throughput             ${(flows / seconds).toFixed(0)} flows/s (${seconds.toFixed(2)} s)`);
    console.log(`  flow latency           p50 ${pct(0.5).toFixed(1)} ms  p99 ${pct(0.99).toFixed(1)} ms`);
    console.log(`  server CPU per flow    ${serverCpuMs.toFixed(2)} ms`);
    console.log(`  floor (ECDH + KDF/HMAC/AES per flow) ${floor.toFixed(2)} ms`);
    console.log(`  ratio (server CPU / floor): ${(serverCpuMs / floor).toFixed(2)}`);
    if (errors > 0) process.exitCode = 1;
  } finally {
    child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
