// `ts-vmm mkcw BUNDLE IMAGE`: a bundle becomes a confidential workload image (src/oci/confidential-image.ts).
// Exit status 0 when the image is written, 1 otherwise (the image is then not there).
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_KDF, type KdfChoice } from '../luks/writer.js';
import { readBundleConfig } from '../oci/bundle-config.js';
import { buildConfidentialImage, newWorkloadId } from '../oci/confidential-image.js';
import { memoryMiB, positiveInteger, vcpuCount } from './arguments.js';
import { terminalProgress } from './progress.js';

interface MkcwOptions {
  passphraseFile: string;
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
    .option('--cpus <n>', "vCPUs the workload runs with (default: the bundle's)", vcpuCount)
    .option('--mem <MiB>', "guest memory the workload runs with (default: the bundle's)", memoryMiB)
    .option('--attestation-url <url>', 'the key broker that releases the passphrase to the attested guest')
    .option('--workload-id <id>', "the workload's name at the key broker (default: 32 random bytes as hex)")
    .addOption(new Option('--pbkdf <kdf>', 'keyslot KDF').choices(['argon2id', 'pbkdf2']).default('argon2id'))
    .option('--pbkdf-memory <KiB>', 'argon2id memory cost', positiveInteger)
    .option('--pbkdf-force-iterations <n>', 'argon2id passes or PBKDF2 iterations', positiveInteger)
    .action(async (bundle: string, image: string, options: MkcwOptions) => {
      const config = readBundleConfig(bundle);
      const passphrase = await passphraseFrom(options.passphraseFile);
      const workloadId = options.workloadId ?? newWorkloadId();
      const progress = terminalProgress(process.stderr);
      try {
        await buildConfidentialImage({
          config,
          configText: await readFile(config.configPath, 'utf8'),
          image,
          passphrase,
          kdf: kdfChoice(options),
          workload: {
            tee: 'sev',
            tee_data: '',
            workload_id: workloadId,
            cpus: options.cpus ?? config.vm.cpus,
            ram_mib: options.mem ?? config.vm.memoryMiB,
            attestation_url: options.attestationUrl ?? '',
          },
          onProgress: progress && ((done, total) => progress.update(done, total)),
        });
      } finally {
        progress?.finish();
      }
      process.stdout.write(`workload-id ${workloadId}\n`);
    });
}

/** The passphrase's bytes; a file that does not exist yet is created, readable by its owner only. */
async function passphraseFrom(file: string): Promise<Buffer> {
  try {
    const existing = await readFile(file);
    if (existing.length === 0) throw new Error(`--passphrase-file ${file} is empty`);
    return existing;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const passphrase = Buffer.from(randomBytes(32).toString('hex'));
  // 'wx': never replace a file that appeared meanwhile.
  await writeFile(file, passphrase, { flag: 'wx', mode: 0o600 });
  return passphrase;
}

function kdfChoice(options: MkcwOptions): KdfChoice {
  if (options.pbkdf === 'pbkdf2') {
    if (options.pbkdfMemory !== undefined) throw new InvalidArgumentError('--pbkdf-memory is for argon2id');
    return { type: 'pbkdf2', iterations: options.pbkdfForceIterations ?? 600_000 };
  }
  return { ...DEFAULT_KDF, time: options.pbkdfForceIterations ?? DEFAULT_KDF.time, memoryKiB: options.pbkdfMemory ?? DEFAULT_KDF.memoryKiB };
}
