// `ts-vmm sev measurement build|verify` and `secret build`: the owner predicts the launch digest (ts-vmm or
// QEMU/OVMF), checks what LAUNCH_MEASURE reported, and answers with the LAUNCH_SECRET packet.
import { readFileSync, writeFileSync } from 'node:fs';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { hexOrInt, policyArg } from '../arguments.js';
import { computeMeasure, encodeMeasurement, parseMeasurement, verifyMeasurement, type FirmwareBuild } from '../../sev/measurement.js';
import { ovmfLaunchDigest, type OvmfLaunch } from '../../sev/ovmf-digest.js';
import { decodeBase64, pathOrBase64, writeSecretPacket } from '../../sev/owner-files.js';
import { PolicyBit } from '../../sev/policy.js';
import { buildSecretPacket, buildSecretTable } from '../../sev/secret.js';
import { predictTsVmmLaunchDigest } from '../../sev/ts-vmm-launch.js';
import { exactly, say } from './common.js';

function byte(value: string): number {
  const n = hexOrInt(value);
  if (n > 0xff) throw new InvalidArgumentError(`'${value}' does not fit in a byte`);
  return n;
}

interface DigestOptions {
  launchDigest?: string;
  firmware?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  numCpus?: number;
  vmsaCpu0?: string;
  vmsaCpu1?: string;
  tsVmm?: boolean;
  mem: number;
  virtioDevices: number;
}

function addDigestOptions(cmd: Command): Command {
  return cmd
    .option('--launch-digest <base64>', 'the launch digest, if already known')
    .option('--firmware <file>', 'OVMF image (QEMU/OVMF launch)')
    .option('--kernel <file>', 'kernel (QEMU kernel-hashes table, or the ts-vmm kernel with --ts-vmm)')
    .option('--initrd <file>', 'initrd')
    .option('--cmdline <string>', 'kernel command line')
    .option('--num-cpus <n>', 'vCPUs (SEV-ES VMSAs; for --ts-vmm the guest CPU count)', hexOrInt)
    .option('--vmsa-cpu0 <file>', 'SEV-ES: VMSA of the boot CPU (QEMU/OVMF launch)')
    .option('--vmsa-cpu1 <file>', 'SEV-ES: VMSA of the other CPUs (QEMU/OVMF launch)')
    .option('--ts-vmm', 'predict a `ts-vmm boot --tee` launch (firmware entry) instead of QEMU/OVMF')
    .option('--mem <MiB>', 'ts-vmm guest memory in MiB', hexOrInt, 512)
    .option('--virtio-devices <n>', 'ts-vmm virtio-mmio devices (one per --disk and --vsock)', hexOrInt, 0);
}

async function launchDigestOf(o: DigestOptions, policy: number): Promise<Buffer> {
  if (o.launchDigest) return exactly(decodeBase64(o.launchDigest, '--launch-digest'), 32, '--launch-digest');
  if (o.tsVmm) {
    if (!o.kernel) throw new Error('--ts-vmm needs --kernel');
    if (policy & PolicyBit.ES) throw new Error('ts-vmm launches SEV guests, not SEV-ES: drop policy bit 2');
    return predictTsVmmLaunchDigest({
      kernel: readFileSync(o.kernel),
      initrd: o.initrd ? readFileSync(o.initrd) : undefined,
      cmdline: o.cmdline ?? '',
      cpus: o.numCpus ?? 1,
      memoryMiB: o.mem,
      virtioDevices: o.virtioDevices,
    });
  }
  if (!o.firmware) throw new Error('one of --launch-digest, --firmware or --ts-vmm is needed');
  const launch: OvmfLaunch = { firmware: readFileSync(o.firmware) };
  if (o.kernel || o.initrd || o.cmdline !== undefined) {
    if (!o.kernel || !o.initrd || o.cmdline === undefined) throw new Error('--kernel, --initrd and --cmdline go together');
    launch.kernel = { kernel: readFileSync(o.kernel), initrd: readFileSync(o.initrd), cmdline: o.cmdline };
  }
  if (policy & PolicyBit.ES) {
    if (o.numCpus === undefined || !o.vmsaCpu0 || !o.vmsaCpu1) throw new Error('an SEV-ES policy needs --num-cpus, --vmsa-cpu0 and --vmsa-cpu1');
    launch.es = { vcpus: o.numCpus, bootVmsa: readFileSync(o.vmsaCpu0), apVmsa: readFileSync(o.vmsaCpu1) };
  }
  return ovmfLaunchDigest(launch);
}

interface BuildFields {
  apiMajor: number;
  apiMinor: number;
  buildId: number;
  policy: number;
  tik: string;
}

function firmwareBuild(o: BuildFields): FirmwareBuild {
  return { apiMajor: o.apiMajor, apiMinor: o.apiMinor, build: o.buildId };
}

function addBuildOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--api-major <n>', 'firmware API major (PLATFORM_STATUS)', byte)
    .requiredOption('--api-minor <n>', 'firmware API minor', byte)
    .requiredOption('--build-id <n>', 'firmware build', byte)
    .requiredOption('--policy <n>', 'guest policy', policyArg)
    .requiredOption('--tik <file|base64>', "the session's TIK");
}

export function registerMeasurementCommands(sev: Command): void {
  const measurement = sev.command('measurement').description('launch measurements');
  addDigestOptions(addBuildOptions(measurement.command('build').description('compute the expected LAUNCH_MEASURE answer (measure || nonce, base64)')))
    .option('--nonce <file|base64>', 'the mnonce')
    .option('--launch-measure-blob <file|base64>', 'take the mnonce from a reported measurement')
    .option('--outfile <file>', 'write the binary measurement here instead of printing base64')
    .action(async (o: DigestOptions & BuildFields & { nonce?: string; launchMeasureBlob?: string; outfile?: string }) => {
      const nonce = o.nonce
        ? exactly(pathOrBase64(o.nonce, '--nonce'), 16, '--nonce')
        : o.launchMeasureBlob
          ? parseMeasurement(pathOrBase64(o.launchMeasureBlob, '--launch-measure-blob')).mnonce
          : undefined;
      if (!nonce) throw new Error('one of --nonce or --launch-measure-blob is needed');
      const digest = await launchDigestOf(o, o.policy);
      const tik = exactly(pathOrBase64(o.tik, '--tik'), 16, '--tik');
      const out = encodeMeasurement({ measure: computeMeasure(tik, firmwareBuild(o), o.policy, digest, nonce), mnonce: nonce });
      if (o.outfile) writeFileSync(o.outfile, out);
      else say(out.toString('base64'));
    });

  addDigestOptions(addBuildOptions(measurement.command('verify').description('check a reported measurement against the expected launch')))
    .requiredOption('--measurement <file|base64>', 'what LAUNCH_MEASURE reported (measure || mnonce)')
    .action(async (o: DigestOptions & BuildFields & { measurement: string }) => {
      const m = parseMeasurement(pathOrBase64(o.measurement, '--measurement'));
      const digest = await launchDigestOf(o, o.policy);
      const tik = exactly(pathOrBase64(o.tik, '--tik'), 16, '--tik');
      const ok = verifyMeasurement(m, tik, firmwareBuild(o), o.policy, digest);
      say(ok ? `measurement verified (launch digest ${digest.toString('hex')})` : 'measurement does NOT match the expected launch');
      process.exitCode = ok ? 0 : 1;
    });

  sev
    .command('secret')
    .description('launch secrets')
    .command('build')
    .description("build a LAUNCH_SECRET packet carrying OVMF's secret table (as sevctl secret build)")
    .requiredOption('--tik <file|base64>', "the session's TIK")
    .requiredOption('--tek <file|base64>', "the session's TEK")
    .requiredOption('--launch-measure-blob <file|base64>', 'the verified measurement (measure || mnonce)')
    .option('--secret <guid:file>', 'a secret entry (repeatable)', (v: string, all: string[]) => [...all, v], [] as string[])
    .addOption(new Option('--iv <base64>', 'fixed IV (reproducible tests only)').hideHelp())
    .argument('<header-file>')
    .argument('<payload-file>')
    .action((headerFile: string, payloadFile: string, o: { tik: string; tek: string; launchMeasureBlob: string; secret: string[]; iv?: string }) => {
      if (o.secret.length === 0) throw new Error('at least one --secret GUID:FILE is needed');
      const entries = o.secret.map((s) => {
        const colon = s.indexOf(':');
        if (colon < 0) throw new Error(`--secret '${s}': expected GUID:FILE`);
        return { guid: s.slice(0, colon), data: readFileSync(s.slice(colon + 1)) };
      });
      const keys = { tik: exactly(pathOrBase64(o.tik, '--tik'), 16, '--tik'), tek: exactly(pathOrBase64(o.tek, '--tek'), 16, '--tek') };
      const blob = pathOrBase64(o.launchMeasureBlob, '--launch-measure-blob');
      if (blob.length < 32) throw new Error('--launch-measure-blob is shorter than the 32-byte measure');
      const iv = o.iv ? exactly(decodeBase64(o.iv, '--iv'), 16, '--iv') : undefined;
      writeSecretPacket(headerFile, payloadFile, buildSecretPacket(keys, blob.subarray(0, 32), buildSecretTable(entries), iv));
      say(`wrote ${headerFile} and ${payloadFile}`);
    });
}
