// The SEV firmware a command talks to: the hardware's through /dev/sev, or sev-sim's with the identity kept in a
// state directory, and the platform's own certificate chain as it exports it.
import { type CaChain, parseSevChain, type SevChain } from './chain.js';
import type { SevPlatform } from './firmware.js';
import { SevDevice } from './psp.js';
import { SimulatedPlatform } from './sev-sim.js';
import { SimulatedIdentity } from './sim-identity.js';

/** The SEV firmware: /dev/sev, or sev-sim's state directory with its CA chain. */
export function platformFrom(simState?: string): { platform: SevPlatform; close(): void; ca?: CaChain } {
  if (simState) {
    const identity = SimulatedIdentity.load(simState);
    return { platform: new SimulatedPlatform(identity), close: () => undefined, ca: identity.chain };
  }
  const device = SevDevice.open();
  return { platform: device, close: () => device.close() };
}

/** The platform's own chain as PDH_CERT_EXPORT gives it: PDH, PEK, OCA, CEK. */
export function exportedSevChain(platform: SevPlatform): SevChain {
  const { pdh, chain } = platform.pdhCertExport();
  return parseSevChain(Buffer.concat([pdh.bytes, chain]));
}
