// What the `ts-vmm sev` commands share: output, exact-length arguments, and the platform they talk to.
import { type CaChain, parseSevChain, type SevChain } from '../../sev/chain.js';
import type { SevPlatform } from '../../sev/firmware.js';
import { SevDevice } from '../../sev/psp.js';
import { SimulatedPlatform } from '../../sev/sev-sim.js';
import { SimulatedIdentity } from '../../sev/sim-identity.js';

export const say = (line: string): boolean => process.stdout.write(`${line}\n`);

export function exactly(bytes: Buffer, length: number, what: string): Buffer {
  if (bytes.length !== length) throw new Error(`${what} is ${bytes.length} bytes, expected ${length}`);
  return bytes;
}

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
