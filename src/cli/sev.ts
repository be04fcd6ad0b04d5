// `ts-vmm sev ...`: the guest owner's tools (close to sevctl's commands and file formats) and the platform
// commands, against the SEV hardware (/dev/sev) or the simulated firmware's state directory (--sim-state).
import { readFileSync, writeFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { hexOrInt, policyArg } from './arguments.js';
import { caChainLinks, encodeCaChain, encodeSevChain, parseCaChain, parseFullChain, parseSevChain, sevChainLinks, verifyChain, type LinkResult, type SevChain, type CaChain } from '../sev/chain.js';
import type { SevPlatform } from '../sev/firmware.js';
import { computeMeasure, encodeMeasurement, parseMeasurement, verifyMeasurement, type FirmwareBuild } from '../sev/measurement.js';
import { ovmfLaunchDigest, type OvmfLaunch } from '../sev/ovmf-digest.js';
import { decodeBase64, pathOrBase64, sessionFileNames, writeSecretPacket, writeSessionFiles } from '../sev/owner-files.js';
import { Usage } from '../sev/certificate-key.js';
import { describePolicy, PolicyBit } from '../sev/policy.js';
import { SevDevice } from '../sev/psp.js';
import { SEV_STATUS_FLAGS_CONFIG_ES } from '../sev/sev-abi.js';
import { buildSecretPacket, buildSecretTable } from '../sev/secret.js';
import { createSession } from '../sev/session.js';
import { SEV_CERT_SIZE, SevCertificate } from '../sev/sev-certificate.js';
import { SimulatedPlatform } from '../sev/sev-sim.js';
import { SimulatedIdentity } from '../sev/sim-identity.js';
import { predictTsVmmLaunchDigest } from '../sev/ts-vmm-launch.js';
import { decodeVmsa, ovmfApResetAddress, resetVmsa, updateVmsa } from '../sev/vmsa.js';

const say = (line: string) => process.stdout.write(`${line}\n`);

function byte(value: string): number {
  const n = hexOrInt(value);
  if (n > 0xff) throw new InvalidArgumentError(`'${value}' does not fit in a byte`);
  return n;
}

function exactly(bytes: Buffer, length: number, what: string): Buffer {
  if (bytes.length !== length) throw new Error(`${what} is ${bytes.length} bytes, expected ${length}`);
  return bytes;
}

function platformFrom(simState?: string): { platform: SevPlatform; close(): void; ca?: CaChain } {
  if (simState) {
    const identity = SimulatedIdentity.load(simState);
    return { platform: new SimulatedPlatform(identity), close: () => undefined, ca: identity.chain };
  }
  const device = SevDevice.open();
  return { platform: device, close: () => device.close() };
}

/** The PDH a session is made for: a lone certificate, or the first of a chain whose links hold. */
function pdhOf(bytes: Buffer): SevCertificate {
  if (bytes.length === SEV_CERT_SIZE) return SevCertificate.parse(bytes, 'PDH');
  if (bytes.length === 4 * SEV_CERT_SIZE) {
    const chain = parseSevChain(bytes);
    const broken = sevChainLinks(chain).find((l) => !l.ok);
    if (broken) throw new Error(`the SEV chain's ${broken.link} signature does not verify`);
    return chain.pdh;
  }
  return verifyChain(parseFullChain(bytes));
}

function parseOca(bytes: Buffer): SevCertificate {
  const oca = SevCertificate.parse(bytes, 'OCA');
  if (oca.usage !== Usage.OCA) throw new Error('--oca is not an OCA certificate');
  return oca;
}

function printLinks(links: readonly LinkResult[]): boolean {
  for (const l of links) say(`${l.ok ? 'ok  ' : 'FAIL'} ${l.link}`);
  return links.every((l) => l.ok);
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

interface BuildFields { apiMajor: number; apiMinor: number; buildId: number; policy: number; tik: string }

function firmwareBuild(o: BuildFields): FirmwareBuild {
  return { apiMajor: o.apiMajor, apiMinor: o.apiMinor, build: o.buildId };
}

function addBuildOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--api-major <n>', 'firmware API major (PLATFORM_STATUS)', byte)
    .requiredOption('--api-minor <n>', 'firmware API minor', byte)
    .requiredOption('--build-id <n>', 'firmware build', byte)
    .requiredOption('--policy <n>', 'guest policy', policyArg)
    .requiredOption('--tik <file|base64>', 'the session\'s TIK');
}

interface VmsaOptions { cpu: number; userspace: 'qemu' | 'krun'; family?: number; model?: number; stepping?: number; firmware?: string }

function addVmsaOptions(cmd: Command): Command {
  return cmd
    .argument('<file>')
    .requiredOption('--cpu <n>', 'vCPU index (0 = boot CPU)', hexOrInt)
    .addOption(new Option('--userspace <vmm>', 'the VMM whose reset state to use').choices(['qemu', 'krun']).default('qemu'))
    .option('--family <n>', 'CPUID family', hexOrInt)
    .option('--model <n>', 'CPUID model', hexOrInt)
    .option('--stepping <n>', 'CPUID stepping', hexOrInt)
    .option('--firmware <file>', 'OVMF image (QEMU APs start at its SEV-ES reset block)');
}

function skuOf(o: VmsaOptions): { family: number; model: number; stepping: number } | undefined {
  return o.family || o.model || o.stepping ? { family: o.family ?? 0, model: o.model ?? 0, stepping: o.stepping ?? 0 } : undefined;
}

function apResetAddressOf(o: VmsaOptions): number | undefined {
  return o.userspace === 'qemu' && o.cpu > 0 && o.firmware ? ovmfApResetAddress(readFileSync(o.firmware)) : undefined;
}

export function register(program: Command): void {
  const sev = program.command('sev').description('AMD SEV: platform commands and the guest owner\'s tools (sevctl-compatible files)');
  const simState = new Option('--sim-state <dir>', 'use the simulated firmware (sev-sim) kept in this state directory instead of /dev/sev');

  sev.command('status').description('PLATFORM_STATUS').addOption(simState)
    .action((o: { simState?: string }) => {
      const p = platformFrom(o.simState);
      try {
        const s = p.platform.platformStatus();
        say(`API ${s.apiMajor}.${s.apiMinor} build ${s.build}, platform ${s.state}, ${s.guestCount} guest(s), SEV-ES ${s.flags & SEV_STATUS_FLAGS_CONFIG_ES ? 'available' : 'not available'}`);
      } finally {
        p.close();
      }
    });

  sev.command('export').description('write the platform\'s chain: PDH, PEK, OCA, CEK (then ASK, ARK with --full)')
    .addOption(simState)
    .option('-f, --full', 'append the ASK and ARK (from the simulator, or --ca for hardware)')
    .option('--ca <file>', 'AMD\'s ASK || ARK for this platform generation (hardware --full)')
    .argument('<file>')
    .action((file: string, o: { simState?: string; full?: boolean; ca?: string }) => {
      const p = platformFrom(o.simState);
      try {
        const { pdh, chain } = p.platform.pdhCertExport();
        const sevChain = parseSevChain(Buffer.concat([pdh.bytes, chain]));
        const parts = [encodeSevChain(sevChain)];
        if (o.full) {
          const ca = o.ca ? parseCaChain(readFileSync(o.ca)) : p.ca;
          if (!ca) throw new Error('--full on hardware needs --ca with AMD\'s ASK and ARK');
          parts.push(encodeCaChain(ca));
        }
        writeFileSync(file, Buffer.concat(parts));
      } finally {
        p.close();
      }
    });

  sev.command('verify').description('verify a platform\'s certificate chain, link by link, up to AMD\'s ARK; exit status 0 only when every link holds')
    .option('--full <file>', 'full chain: PDH, PEK, OCA, CEK, ASK, ARK')
    .option('--sev <file>', 'SEV chain: PDH, PEK, OCA, CEK (default: exported from the platform)')
    .option('--oca <file>', 'the OCA certificate, in place of the chain\'s (a platform the owner took over)')
    .option('--ca <file>', 'CA chain: ASK, ARK')
    .addOption(simState)
    .action((o: { full?: string; sev?: string; oca?: string; ca?: string; simState?: string }) => {
      let chain: SevChain;
      let ca: CaChain | undefined;
      if (o.full) {
        const full = parseFullChain(readFileSync(o.full));
        chain = full;
        ca = full;
      } else if (o.sev) {
        chain = parseSevChain(readFileSync(o.sev));
      } else {
        const p = platformFrom(o.simState);
        try {
          const { pdh, chain: rest } = p.platform.pdhCertExport();
          chain = parseSevChain(Buffer.concat([pdh.bytes, rest]));
          ca = p.ca;
        } finally {
          p.close();
        }
      }
      if (o.oca) chain = { ...chain, oca: parseOca(readFileSync(o.oca)) };
      if (o.ca) ca = parseCaChain(readFileSync(o.ca));
      // Without a CA chain the CEK is not proven to be AMD's: that is a failed verification, not a note.
      const caLinks = ca ? caChainLinks(ca, chain.cek) : [{ link: 'ASK -> CEK (no ASK and ARK: give --ca or --full)', ok: false }];
      const ok = [printLinks(caLinks), printLinks(sevChainLinks(chain))].every(Boolean);
      if (ca) say(`ARK key id ${Buffer.from(ca.ark.keyId).toString('hex')}`);
      process.exitCode = ok ? 0 : 1;
    });

  sev.command('session').description('create a launch session for a platform\'s PDH (writes NAME_godh.b64, NAME_session.b64, NAME_tek.bin, NAME_tik.bin)')
    .argument('<pdh>', 'the PDH certificate, the SEV chain `sev export` writes (its links checked), or a full chain (verified up to its ARK)')
    .argument('<policy>', 'guest policy (decimal or 0x-hex)', policyArg)
    .option('-n, --name <name>', 'file name prefix', 'vm')
    .option('--dir <dir>', 'output directory', '.')
    .action((pdhFile: string, policy: number, o: { name: string; dir: string }) => {
      const pdh = pdhOf(readFileSync(pdhFile));
      const files = sessionFileNames(o.dir, o.name);
      writeSessionFiles(files, createSession(pdh, policy));
      say(`session for policy 0x${policy.toString(16)} (${describePolicy(policy)}): ${files.godh}, ${files.session}; keep ${files.tek} and ${files.tik} secret`);
    });

  const measurement = sev.command('measurement').description('launch measurements');
  addDigestOptions(addBuildOptions(measurement.command('build').description('compute the expected LAUNCH_MEASURE answer (measure || nonce, base64)')))
    .option('--nonce <file|base64>', 'the mnonce')
    .option('--launch-measure-blob <file|base64>', 'take the mnonce from a reported measurement')
    .option('--outfile <file>', 'write the binary measurement here instead of printing base64')
    .action(async (o: DigestOptions & BuildFields & { nonce?: string; launchMeasureBlob?: string; outfile?: string }) => {
      const nonce = o.nonce ? exactly(pathOrBase64(o.nonce, '--nonce'), 16, '--nonce')
        : o.launchMeasureBlob ? parseMeasurement(pathOrBase64(o.launchMeasureBlob, '--launch-measure-blob')).mnonce : undefined;
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

  sev.command('secret').description('launch secrets').command('build')
    .description('build a LAUNCH_SECRET packet carrying OVMF\'s secret table (as sevctl secret build)')
    .requiredOption('--tik <file|base64>', 'the session\'s TIK')
    .requiredOption('--tek <file|base64>', 'the session\'s TEK')
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

  const vmsa = sev.command('vmsa').description('SEV-ES VMSAs');
  addVmsaOptions(vmsa.command('build').description('write the reset VMSA of one vCPU as KVM and QEMU or libkrun set it up (as sevctl vmsa build)'))
    .action((file: string, o: VmsaOptions) => {
      writeFileSync(file, resetVmsa({ vmm: o.userspace, cpu: o.cpu, sku: skuOf(o), apResetAddress: apResetAddressOf(o) }));
    });
  addVmsaOptions(vmsa.command('update').description('set the CPU signature and a QEMU AP\'s reset address in an existing VMSA file (as sevctl vmsa update)'))
    .action((file: string, o: VmsaOptions) => {
      writeFileSync(file, updateVmsa(readFileSync(file), { sku: skuOf(o), apResetAddress: apResetAddressOf(o) }));
    });
  vmsa.command('show').description('print a VMSA file\'s registers and segments as JSON (as sevctl vmsa show)')
    .argument('<file>')
    .action((file: string) => {
      const state = decodeVmsa(readFileSync(file));
      say(JSON.stringify(state, (_key, value: unknown) => (typeof value === 'bigint' ? `0x${value.toString(16)}` : value), 2));
    });

  sev.command('sim-init').description('create (or show) a simulated platform identity in a state directory')
    .requiredOption('--sim-state <dir>', 'state directory')
    .addOption(new Option('--ca-bits <bits>', 'ARK/ASK size').choices(['2048', '4096']).default('4096'))
    .action((o: { simState: string; caBits: string }) => {
      const identity = SimulatedIdentity.loadOrCreate(o.simState, { caBits: o.caBits === '2048' ? 2048 : 4096 });
      verifyChain(identity.chain);
      say(`sev-sim identity in ${o.simState}: pin ${o.simState}/chain.cert (PDH, PEK, OCA, CEK, ASK, ARK)`);
    });
}
