// `ts-vmm kbs serve` (the key broker, KBS v0) and `ts-vmm kbs register` (the guest owner registers a workload).
// Secrets (admin token, passphrase) come from files, never from the command line.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { positiveInteger, policyArg, secretFile } from './arguments.js';
import { AuditLog } from '../kbs/audit.js';
import { Broker, tokenDigest } from '../kbs/broker.js';
import { KbsClient } from '../kbs/client.js';
import { launchPassphrase } from '../kbs/passphrase.js';
import { createKbsServer } from '../kbs/server.js';
import { WorkloadStore } from '../kbs/store.js';
import { TrustStore, loadTrustAnchor } from '../kbs/trust.js';
import { SEV_SIM_WARNING } from '../sev/sev-sim.js';
import { describePolicy } from '../sev/policy.js';

/** Exit status of `kbs serve` started without what it needs to decide anything (no trust anchor). */
const EXIT_USAGE = 2;

function hostPort(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new InvalidArgumentError(`'${value}' is not HOST:PORT`);
  return { host: m[1] ?? m[2]!, port };
}

function launchDigestArg(value: string): Buffer {
  if (!/^[0-9a-fA-F]{64}$/.test(value)) throw new InvalidArgumentError(`'${value}' is not 64 hex digits (a SHA-256 launch digest)`);
  return Buffer.from(value, 'hex');
}

interface ServeOptions {
  listen: { host: string; port: number };
  store: string;
  trustArk: string[];
  adminTokenFile: string;
  tlsCert?: string;
  tlsKey?: string;
  sessionTtl: number;
}

async function serve(o: ServeOptions): Promise<void> {
  if (o.trustArk.length === 0) {
    process.stderr.write("ts-vmm kbs serve: no trust anchor: give --trust-ark FILE (AMD's ARK, or a sev-sim state directory for development)\n");
    process.exitCode = EXIT_USAGE;
    return;
  }
  if (Boolean(o.tlsCert) !== Boolean(o.tlsKey)) throw new Error('--tls-cert and --tls-key go together');
  const trust = new TrustStore(o.trustArk.map(loadTrustAnchor));
  const simulated = trust.anchors.some((a) => a.simulated);
  const store = new WorkloadStore(o.store);
  const audit = new AuditLog(path.join(o.store, 'audit.log'), simulated);
  const broker = new Broker({
    store,
    trust,
    audit,
    adminTokenDigest: tokenDigest(secretFile(o.adminTokenFile, 'admin token file')),
    sessionTtlMs: o.sessionTtl * 1000,
  });
  const tls = o.tlsCert && o.tlsKey ? { cert: readFileSync(o.tlsCert), key: readFileSync(o.tlsKey) } : undefined;
  const server = createKbsServer({ broker, tls });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.listen.port, o.listen.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : o.listen.port;
  const host = o.listen.host.includes(':') ? `[${o.listen.host}]` : o.listen.host;
  const anchors = trust.anchors.map((a) => `${a.source}${a.simulated ? ' (SIMULATED)' : ''}`).join(', ');
  process.stdout.write(`ts-vmm kbs: listening on ${tls ? 'https' : 'http'}://${host}:${port}, store ${o.store}, trust ${anchors}\n`);
  if (simulated) process.stdout.write(`ts-vmm kbs: SIMULATED trust anchor: ${SEV_SIM_WARNING}\n`);
  const stop = () => {
    server.close(() => audit.close());
    server.closeAllConnections();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

export function register(program: Command): void {
  const kbs = program.command('kbs').description("key broker (KBS v0, as libkrun's SEV attestation speaks it)");

  kbs
    .command('serve')
    .description('serve the key broker: workloads, attestation, secrets')
    .requiredOption('--listen <host:port>', 'address to listen on (port 0: any free port)', hostPort)
    .requiredOption('--store <dir>', 'durable store: workloads and their secrets, audit.log')
    .option(
      '--trust-ark <file>',
      "trust platforms under this ARK (AMD's ARK or ask_ark file, or a sev-sim state directory); repeatable",
      (v: string, all: string[]) => [...all, v],
      [] as string[],
    )
    .requiredOption('--admin-token-file <file>', 'file holding the token register_workload requires')
    .option('--tls-cert <file>', 'PEM certificate: serve HTTPS')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .option('--session-ttl <seconds>', 'how long an attestation session lives', positiveInteger, 300)
    .action(serve);

  kbs
    .command('register')
    .description('register (or replace) a workload with a key broker')
    .requiredOption('--url <url>', 'the key broker, http(s)://host:port')
    .requiredOption('--admin-token-file <file>', 'file holding the admin token')
    .requiredOption('--workload-id <id>', 'the workload id the VMM will present')
    .requiredOption('--launch-digest <hex>', 'the expected SHA-256 launch digest', launchDigestArg)
    .requiredOption('--policy <n>', 'the guest policy (decimal or 0x-hex)', policyArg)
    .requiredOption('--passphrase-file <file>', 'file holding the secret released to the verified launch')
    .option('--kbs-ca <file>', 'PEM CA to trust for an https key broker')
    .action(
      async (o: { url: string; adminTokenFile: string; workloadId: string; launchDigest: Buffer; policy: number; passphraseFile: string; kbsCa?: string }) => {
        const client = new KbsClient({ url: o.url, ca: o.kbsCa ? readFileSync(o.kbsCa) : undefined });
        await client.register(secretFile(o.adminTokenFile, 'admin token file'), {
          workloadId: o.workloadId,
          launchDigest: o.launchDigest,
          policy: o.policy,
          passphrase: launchPassphrase(readFileSync(o.passphraseFile), `--passphrase-file ${o.passphraseFile}`),
        });
        process.stdout.write(`registered workload ${o.workloadId} (policy 0x${o.policy.toString(16)}: ${describePolicy(o.policy)})\n`);
      },
    );
}
