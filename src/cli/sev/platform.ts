// `ts-vmm sev status|export|sim-init`: the platform's own commands, on /dev/sev or sev-sim.
import { readFileSync, writeFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { encodeCaChain, encodeSevChain, parseCaChain, verifyChain } from '../../sev/chain.js';
import { SEV_STATUS_FLAGS_CONFIG_ES } from '../../sev/sev-abi.js';
import { SimulatedIdentity } from '../../sev/sim-identity.js';
import { exportedSevChain, platformFrom } from '../../sev/platform.js';
import { say } from './common.js';

export function registerPlatformCommands(sev: Command, simState: Option): void {
  sev
    .command('status')
    .description('PLATFORM_STATUS')
    .addOption(simState)
    .action((o: { simState?: string }) => {
      const p = platformFrom(o.simState);
      try {
        const s = p.platform.platformStatus();
        say(
          `API ${s.apiMajor}.${s.apiMinor} build ${s.build}, platform ${s.state}, ${s.guestCount} guest(s), SEV-ES ${s.flags & SEV_STATUS_FLAGS_CONFIG_ES ? 'available' : 'not available'}`,
        );
      } finally {
        p.close();
      }
    });

  sev
    .command('export')
    .description("write the platform's chain: PDH, PEK, OCA, CEK (then ASK, ARK with --full)")
    .addOption(simState)
    .option('-f, --full', 'append the ASK and ARK (from the simulator, or --ca for hardware)')
    .option('--ca <file>', "AMD's ASK || ARK for this platform generation (hardware --full)")
    .argument('<file>')
    .action((file: string, o: { simState?: string; full?: boolean; ca?: string }) => {
      const p = platformFrom(o.simState);
      try {
        const sevChain = exportedSevChain(p.platform);
        const parts = [encodeSevChain(sevChain)];
        if (o.full) {
          const ca = o.ca ? parseCaChain(readFileSync(o.ca)) : p.ca;
          if (!ca) throw new Error("--full on hardware needs --ca with AMD's ASK and ARK");
          parts.push(encodeCaChain(ca));
        }
        writeFileSync(file, Buffer.concat(parts));
      } finally {
        p.close();
      }
    });

  sev
    .command('sim-init')
    .description('create (or show) a simulated platform identity in a state directory')
    .requiredOption('--sim-state <dir>', 'state directory')
    .addOption(new Option('--ca-bits <bits>', 'ARK/ASK size').choices(['2048', '4096']).default('4096'))
    .action((o: { simState: string; caBits: string }) => {
      const identity = SimulatedIdentity.loadOrCreate(o.simState, { caBits: o.caBits === '2048' ? 2048 : 4096 });
      verifyChain(identity.chain);
      say(`sev-sim identity in ${o.simState}: pin ${o.simState}/chain.cert (PDH, PEK, OCA, CEK, ASK, ARK)`);
    });
}
