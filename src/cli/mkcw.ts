// `ts-vmm mkcw BUNDLE IMAGE`: a bundle becomes a confidential workload image (src/oci/confidential-image.ts).
// Exit status 0 when the image is written, 1 otherwise (the image is then not there).
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { DEFAULT_KDF, type KdfChoice } from '../luks/writer.js';
import { readBundleConfig } from '../oci/bundle-config.js';
import { buildConfidentialImage, newWorkloadId } from '../oci/confidential-image.js';
import { confidentialBootInputs, confidentialGuest, LOCAL_OWNER_POLICY } from '../oci/confidential-run.js';
import { checkKernelPair } from '../oci/kernel-choice.js';
import { INTEGRITY_CHOICES, type IntegrityChoice } from '../oci/integrity-build.js';
import { launchVm } from '../oci/vm-launch.js';
import type { WorkloadConfig } from '../oci/workload-footer.js';
import { KbsClient } from '../kbs/client.js';
import { launchPassphrase } from '../kbs/passphrase.js';
import { predictTsVmmLaunchDigest } from '../sev/ts-vmm-launch.js';
import { memoryMiB, policyArg, positiveInteger, secretFile, vcpuCount } from './arguments.js';
import { quietLog } from './run.js';
import { stderrLog } from '../assets/debian.js';
import { kvmUnsuitableReason } from '../kvm/probe.js';
import { relayInLab } from '../lab/relay.js';
import { AGENT_ENV, ensureGuestAgent } from '../oci/guest-agent.js';
import { runCacheDir } from '../oci/paths.js';
import { terminalProgress } from './progress.js';

interface MkcwOptions {
  passphraseFile: string;
  integrity?: IntegrityChoice;
  kernel?: string;
  modules?: string;
  adminTokenFile?: string;
  policy: number;
  kbsCa?: string;
  cpus?: number;
  mem?: number;
  attestationUrl?: string;
  workloadId?: string;
  pbkdf: 'argon2id' | 'pbkdf2';
  pbkdfMemory?: number;
  pbkdfForceIterations?: number;
}

export function register(program: Command): void {
  program
    .command('mkcw')
    .description("make a confidential workload image: the bundle's rootfs and config in ext4, encrypted as LUKS2, with buildah mkcw's footer")
    .argument('<bundle>', 'OCI bundle directory (config.json and its rootfs)')
    .argument('<image>', 'the image to write (mode 0600)')
    .requiredOption('--passphrase-file <file>', "the disk passphrase: an existing file's bytes, or a new file (mode 0600) given 32 random bytes as hex")
    .addOption(new Option('--integrity <mode>', 'LUKS2 with dm-integrity (authenticated encryption), formatted by a build VM').choices(INTEGRITY_CHOICES))
    .option('--cpus <n>', "vCPUs the workload runs with (default: the bundle's)", vcpuCount)
    .option('--mem <MiB>', "guest memory the workload runs with (default: the bundle's)", memoryMiB)
    .option('--kernel <vmlinuz>', 'the kernel the workload boots, for the launch digest (default: the one from ts-vmm setup; needs --modules)')
    .option('--modules <dir>', "the kernel's lib/modules/<release> directory")
    .option('--attestation-url <url>', 'the key broker that releases the passphrase to the attested guest: the workload is registered there')
    .option('--admin-token-file <file>', "the key broker's admin token, for the registration")
    .option('--policy <n>', 'the guest policy registered with the key broker (decimal or 0x-hex)', policyArg, LOCAL_OWNER_POLICY)
    .option('--kbs-ca <file>', "the CA certificate the key broker's TLS certificate must chain to")
    .option('--workload-id <id>', "the workload's name at the key broker (default: 32 random bytes as hex)")
    .addOption(new Option('--pbkdf <kdf>', 'keyslot KDF').choices(['argon2id', 'pbkdf2']).default('argon2id'))
    .option('--pbkdf-memory <KiB>', 'argon2id memory cost', positiveInteger)
    .option('--pbkdf-force-iterations <n>', 'argon2id passes or PBKDF2 iterations', positiveInteger)
    .action(async (bundle: string, image: string, options: MkcwOptions) => {
      checkKernelPair({ vmlinuz: options.kernel, modulesDir: options.modules });
      if (options.attestationUrl !== undefined && options.adminTokenFile === undefined) {
        throw new Error('--attestation-url registers the workload: give --admin-token-file FILE too');
      }
      const labReason = options.integrity === undefined ? undefined : kvmUnsuitableReason();
      if (labReason !== undefined) {
        readBundleConfig(bundle);
        process.stderr.write(`ts-vmm: ${labReason}; the integrity build VM runs in the lab (QEMU TCG, slower)\n`);
        process.exitCode = await mkcwInLab(bundle, image, options);
        return;
      }
      const config = readBundleConfig(bundle);
      const workload: WorkloadConfig = {
        tee: 'sev',
        tee_data: '',
        workload_id: options.workloadId ?? newWorkloadId(),
        cpus: options.cpus ?? config.vm.cpus,
        ram_mib: options.mem ?? config.vm.memoryMiB,
        attestation_url: options.attestationUrl ?? '',
      };
      const { passphrase, keep } = await passphraseFrom(options.passphraseFile);
      const guest = await confidentialGuest({ kernel: { vmlinuz: options.kernel, modulesDir: options.modules }, log: quietLog });
      // The prediction (hashing the kernel and the initramfs) runs while mke2fs builds the filesystem.
      const digest = confidentialBootInputs(guest.kernel.vmlinuz, guest.initrd, workload.cpus, workload.ram_mib).then(predictTsVmmLaunchDigest);
      digest.catch(() => undefined); // awaited below; a build that fails first is the error reported
      const progress = terminalProgress(process.stderr);
      try {
        await buildConfidentialImage({
          ...(options.integrity ? { integrity: { choice: options.integrity, kernel: guest.kernel.vmlinuz, initrd: guest.initrd, launch: launchVm } } : {}),
          config,
          configText: await readFile(config.configPath, 'utf8'),
          image,
          passphrase,
          kdf: kdfChoice(options),
          workload,
          onProgress: progress && ((done, total) => progress.update(done, total)),
          // Registered before the image is in place, as buildah mkcw does: a broker that refuses leaves nothing behind.
          beforePlacing: async () => {
            if (options.attestationUrl !== undefined && options.adminTokenFile !== undefined) {
              const client = new KbsClient({ url: options.attestationUrl, ca: options.kbsCa === undefined ? undefined : await readFile(options.kbsCa) });
              await client.register(secretFile(options.adminTokenFile, 'admin token file'), {
                workloadId: workload.workload_id,
                launchDigest: await digest,
                policy: options.policy,
                passphrase: launchPassphrase(passphrase, `--passphrase-file ${options.passphraseFile}`),
              });
            }
            await keep();
          },
        });
      } finally {
        progress?.finish();
      }
      process.stdout.write(`workload-id ${workload.workload_id}\n`);
      process.stdout.write(`launch-digest ${(await digest).toString('hex')}\n`);
      if (options.attestationUrl !== undefined) process.stdout.write(`registered ${options.attestationUrl}\n`);
    });
}

/** Where the lab's mkcw writes the image, which is then copied out to the host. */
const LAB_IMAGE = '/tmp/ts-vmm-mkcw.img';

/**
 * The same mkcw inside the lab, for the build VM's KVM: the files it reads carried in, the passphrase file made
 * here first (the lab's files are discarded), and the image copied out, written aside and renamed when whole.
 */
async function mkcwInLab(bundle: string, image: string, options: MkcwOptions): Promise<number> {
  // Made here, where it stays: the lab's files are discarded.
  await (await passphraseFrom(options.passphraseFile)).keep();
  const agent = await ensureGuestAgent(runCacheDir(), stderrLog);
  const include = [resolve(bundle), agent];
  const argv = ['mkcw', resolve(bundle), LAB_IMAGE];
  const files: [string, string | undefined][] = [
    ['--passphrase-file', options.passphraseFile],
    ['--kernel', options.kernel],
    ['--modules', options.modules],
    ['--admin-token-file', options.adminTokenFile],
    ['--kbs-ca', options.kbsCa],
  ];
  for (const [flag, file] of files) {
    if (file === undefined) continue;
    include.push(resolve(file));
    argv.push(flag, resolve(file));
  }
  const values: [string, string | number | undefined][] = [
    ['--integrity', options.integrity],
    ['--cpus', options.cpus],
    ['--mem', options.mem],
    ['--attestation-url', options.attestationUrl],
    ['--policy', `0x${options.policy.toString(16)}`],
    ['--workload-id', options.workloadId],
    ['--pbkdf', options.pbkdf],
    ['--pbkdf-memory', options.pbkdfMemory],
    ['--pbkdf-force-iterations', options.pbkdfForceIterations],
  ];
  for (const [flag, value] of values) if (value !== undefined) argv.push(flag, String(value));
  const partial = `${image}.${process.pid}.partial`;
  const out = createWriteStream(partial, { flags: 'wx', mode: 0o600 });
  try {
    const status = await relayInLab(argv, { include, env: { [AGENT_ENV]: agent }, copyOut: { guestPath: LAB_IMAGE, to: out } });
    await new Promise<void>((done, fail) => out.end((e?: Error | null) => (e ? fail(e) : done())));
    if (status === 0) await rename(partial, image);
    return status;
  } finally {
    out.destroy();
    await rm(partial, { force: true });
  }
}

/**
 * The passphrase: an existing file's bytes, or for a file that does not exist yet 32 random bytes as hex, which
 * `keep` writes there (readable by its owner only) once the image is made, so a failed mkcw leaves no file.
 */
async function passphraseFrom(file: string): Promise<{ passphrase: Buffer; keep: () => Promise<void> }> {
  try {
    const existing = await readFile(file);
    if (existing.length === 0) throw new Error(`--passphrase-file ${file} is empty`);
    return { passphrase: existing, keep: async () => undefined };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const passphrase = Buffer.from(randomBytes(32).toString('hex'));
  // 'wx': never replace a file that appeared meanwhile.
  return { passphrase, keep: () => writeFile(file, passphrase, { flag: 'wx', mode: 0o600 }) };
}

function kdfChoice(options: MkcwOptions): KdfChoice {
  if (options.pbkdf === 'pbkdf2') {
    if (options.pbkdfMemory !== undefined) throw new Error('--pbkdf-memory is for argon2id');
    return { type: 'pbkdf2', iterations: options.pbkdfForceIterations ?? 600_000 };
  }
  return { ...DEFAULT_KDF, time: options.pbkdfForceIterations ?? DEFAULT_KDF.time, memoryKiB: options.pbkdfMemory ?? DEFAULT_KDF.memoryKiB };
}
