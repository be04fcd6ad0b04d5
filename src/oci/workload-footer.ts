// The confidential workload footer, in buildah mkcw's layout, at the very end of the disk image: the
// workload config as JSON, the magic "KRUN", then the JSON's length as a little-endian u64. libkrun's
// guest init reads it from the end of /dev/vda; so does ts-vmm's. Zero padding before the JSON makes the
// image a whole number of 4 KiB blocks, so the guest's block device shows every byte of it.
import { Ajv } from 'ajv';

export const FOOTER_MAGIC = 'KRUN';
const TRAILER_SIZE = FOOTER_MAGIC.length + 8;
/** No workload config comes near this; a larger declared length is a damaged or hostile image. */
export const MAX_WORKLOAD_CONFIG_BYTES = 64 * 1024;
const ALIGNMENT = 4096;

/** libkrun's TeeConfig, as buildah mkcw writes it. */
export interface WorkloadConfig {
  tee: 'sev';
  tee_data: string;
  workload_id: string;
  cpus: number;
  ram_mib: number;
  attestation_url: string;
}

const validate = new Ajv({ allErrors: false }).compile<WorkloadConfig>({
  type: 'object',
  required: ['tee', 'workload_id', 'cpus', 'ram_mib'],
  properties: {
    tee: { const: 'sev' },
    tee_data: { type: 'string', maxLength: 4096 },
    workload_id: { type: 'string', minLength: 1, maxLength: 256 },
    cpus: { type: 'integer', minimum: 1, maximum: 254 },
    ram_mib: { type: 'integer', minimum: 64 },
    attestation_url: { type: 'string', maxLength: 2048 },
  },
});

export class WorkloadFooterError extends Error {
  override readonly name = 'WorkloadFooterError';
}

/** Padding, JSON, magic and length, to append to an image of `imageLength` bytes. */
export function encodeFooter(config: WorkloadConfig, imageLength: number): Buffer {
  const json = Buffer.from(JSON.stringify(config), 'utf8');
  const unpadded = imageLength + json.length + TRAILER_SIZE;
  const padding = (ALIGNMENT - (unpadded % ALIGNMENT)) % ALIGNMENT;
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([Buffer.alloc(padding), json, Buffer.from(FOOTER_MAGIC, 'latin1'), length]);
}

/**
 * The workload config of an image whose last bytes are `tail` (at least the trailer; the JSON is read
 * from the bytes before it), or undefined when the image has no footer.
 */
export function decodeFooter(tail: Buffer): WorkloadConfig | undefined {
  if (tail.length < TRAILER_SIZE || tail.toString('latin1', tail.length - TRAILER_SIZE, tail.length - 8) !== FOOTER_MAGIC) return undefined;
  const declared = tail.readBigUInt64LE(tail.length - 8);
  if (declared > BigInt(MAX_WORKLOAD_CONFIG_BYTES))
    throw new WorkloadFooterError(`workload config of ${declared} bytes is above the ${MAX_WORKLOAD_CONFIG_BYTES} allowed`);
  const length = Number(declared);
  if (length > tail.length - TRAILER_SIZE) throw new WorkloadFooterError(`workload config of ${length} bytes does not fit the image`);
  let config: unknown;
  try {
    config = JSON.parse(tail.toString('utf8', tail.length - TRAILER_SIZE - length, tail.length - TRAILER_SIZE));
  } catch (e) {
    throw new WorkloadFooterError(`workload config is not JSON (${(e as Error).message})`);
  }
  if (!validate(config)) {
    const [first] = validate.errors ?? [];
    throw new WorkloadFooterError(`workload config${first?.instancePath ? ` ${first.instancePath}` : ''} ${first?.message ?? 'is invalid'}`);
  }
  return config;
}

/** How many bytes from the end decodeFooter may need. */
export const FOOTER_READ_BYTES = MAX_WORKLOAD_CONFIG_BYTES + TRAILER_SIZE;
