// `ts-vmm sev verify|session`: the owner checks a platform's certificate chain and makes a launch session for its PDH.
import { readFileSync } from 'node:fs';
import type { Command, Option } from 'commander';
import { policyArg } from '../arguments.js';
import {
  caChainLinks,
  parseCaChain,
  parseFullChain,
  parseSevChain,
  sevChainLinks,
  verifyChain,
  type LinkResult,
  type SevChain,
  type CaChain,
} from '../../sev/chain.js';
import { sessionFileNames, writeSessionFiles } from '../../sev/owner-files.js';
import { Usage } from '../../sev/certificate-key.js';
import { describePolicy } from '../../sev/policy.js';
import { createSession } from '../../sev/session.js';
import { SEV_CERT_SIZE, SevCertificate } from '../../sev/sev-certificate.js';
import { exportedSevChain, platformFrom } from '../../sev/platform.js';
import { say } from './common.js';

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

export function registerChainCommands(sev: Command, simState: Option): void {
  sev
    .command('verify')
    .description("verify a platform's certificate chain, link by link, up to AMD's ARK; exit status 0 only when every link holds")
    .option('--full <file>', 'full chain: PDH, PEK, OCA, CEK, ASK, ARK')
    .option('--sev <file>', 'SEV chain: PDH, PEK, OCA, CEK (default: exported from the platform)')
    .option('--oca <file>', "the OCA certificate, in place of the chain's (a platform the owner took over)")
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
          chain = exportedSevChain(p.platform);
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

  sev
    .command('session')
    .description("create a launch session for a platform's PDH (writes NAME_godh.b64, NAME_session.b64, NAME_tek.bin, NAME_tik.bin)")
    .argument('<pdh>', 'the PDH certificate, the SEV chain `sev export` writes (its links checked), or a full chain (verified up to its ARK)')
    .argument('<policy>', 'guest policy (decimal or 0x-hex)', policyArg)
    .option('-n, --name <name>', 'file name prefix', 'vm')
    .option('--dir <dir>', 'output directory', '.')
    .action((pdhFile: string, policy: number, o: { name: string; dir: string }) => {
      const pdh = pdhOf(readFileSync(pdhFile));
      const files = sessionFileNames(o.dir, o.name);
      writeSessionFiles(files, createSession(pdh, policy));
      say(
        `session for policy 0x${policy.toString(16)} (${describePolicy(policy)}): ${files.godh}, ${files.session}; keep ${files.tek} and ${files.tik} secret`,
      );
    });
}
