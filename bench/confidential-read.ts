// What dm-crypt costs the guest: the same workload reads the same 64 MiB file with `dd` from a plain `ts-vmm run`
// root disk, from a `ts-vmm mkcw` image opened by cryptsetup in the guest (aes-xts-plain64, 4 KiB sectors), and
// from an integrity image (hmac-sha256 tags checked on every read); guest-side MB/s timed by the guest's uptime,
// medians of N runs each, in the same run. The confidential runs are measured launches on sev-sim.
//   npm run build && node dist/bench/confidential-read.js [runs]
// Needs /dev/kvm (run it in the lab where there is none) and `ts-vmm setup` done.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBusybox } from '../src/assets/debian.js';
import { writeBusyboxRootfs } from '../src/oci/example-rootfs.js';
import { SimulatedIdentity } from '../src/sev/sim-identity.js';
import { cliEntry } from '../src/sys/project-paths.js';
import { median } from './measure.js';

const runs = Number(process.argv[2] ?? 3);
const FILE_MIB = 64;

function cli(args: string[]): string {
  const r = spawnSync(process.execPath, [cliEntry(), ...args], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`ts-vmm ${args[0]} exited ${r.status}: ${r.stderr.trim().split('\n').at(-1)}`);
  return `${r.stdout}\n${r.stderr}`;
}

/** MB/s from the workload's line "read-seconds START END" (guest uptime around the read). */
function ddRate(output: string): number {
  const m = /read-seconds ([\d.]+) ([\d.]+)/.exec(output);
  if (!m) throw new Error(`no timing line in:\n${output}`);
  return (FILE_MIB * 1024 * 1024) / (Number(m[2]) - Number(m[1])) / 1e6;
}

const work = mkdtempSync(join(tmpdir(), 'ts-vmm-bench-cw-'));
try {
  const bundle = join(work, 'bundle');
  mkdirSync(bundle);
  await writeBusyboxRootfs((await ensureBusybox()).path, join(bundle, 'rootfs'));
  writeFileSync(join(bundle, 'rootfs', 'big'), randomBytes(FILE_MIB * 1024 * 1024));
  writeFileSync(
    join(bundle, 'config.json'),
    JSON.stringify({
      ociVersion: '1.0.2',
      process: {
        cwd: '/',
        env: ['PATH=/bin'],
        // busybox dd prints no rate here: the guest's uptime (10 ms steps) around it gives the time.
        args: ['sh', '-c', 'read a x < /proc/uptime; dd if=/big of=/dev/null bs=1048576 2>/dev/null; read b x < /proc/uptime; echo "read-seconds $a $b"'],
      },
      root: { path: 'rootfs' },
      mounts: [{ destination: '/proc', type: 'proc', source: 'proc' }],
      annotations: { 'ts-vmm.cpus': '1', 'ts-vmm.memory-mib': '256' },
    }),
  );
  const fastKdf = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];
  const pass = join(work, 'pass');
  cli(['mkcw', bundle, join(work, 'crypt.img'), '--passphrase-file', pass, ...fastKdf]);
  cli(['mkcw', bundle, join(work, 'integrity.img'), '--passphrase-file', pass, '--integrity', 'hmac-sha256', ...fastKdf]);
  const sim = join(work, 'sim');
  SimulatedIdentity.generate({ caBits: 2048 }).save(sim);
  const variants: [string, string[]][] = [
    ['plain root disk', ['run', bundle]],
    ['dm-crypt (aes-xts-plain64)', ['run', '--tee', 'sev-sim', '--sim-state', sim, '--passphrase-file', pass, join(work, 'crypt.img')]],
    ['dm-crypt + dm-integrity (hmac-sha256)', ['run', '--tee', 'sev-sim', '--sim-state', sim, '--passphrase-file', pass, join(work, 'integrity.img')]],
  ];
  const rates = new Map<string, number[]>(variants.map(([name]) => [name, []]));
  for (let i = 0; i < runs; i++) for (const [name, args] of variants) rates.get(name)!.push(ddRate(cli(args)));
  const plain = median(rates.get('plain root disk')!);
  console.log(`guest read of a ${FILE_MIB} MiB file, busybox dd bs=1M, medians of ${runs}`);
  for (const [name] of variants) {
    const rate = median(rates.get(name)!);
    console.log(
      `${name.padEnd(40)} ${rate.toFixed(1).padStart(8)} MB/s  ${(rate / plain).toFixed(2)} of plain  [${rates
        .get(name)!
        .map((r) => r.toFixed(1))
        .join(', ')}]`,
    );
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
