// A text description of a LUKS header (what `cryptsetup luksDump` shows, minus nothing secret is there to show):
// version, uuid, header copies, keyslots with their KDF costs, segments, digests.
import { LuksError } from './errors.js';
import type { DataLayout, LuksImage } from './image.js';
import type { Kdf } from './kdf.js';

function kdfLine(kdf: Kdf): string {
  return kdf.type === 'pbkdf2'
    ? `pbkdf2 hash ${kdf.hash}, ${kdf.iterations} iterations`
    : `${kdf.type} time ${kdf.time}, memory ${kdf.memoryKiB} KiB, cpus ${kdf.cpus}`;
}

/** The data area's size in words, or why it cannot be used (a header dumped without its data file, say). */
function dataSize(image: LuksImage): string {
  let layout: DataLayout;
  try {
    layout = image.dataLayout();
  } catch (e) {
    if (e instanceof LuksError) return `unusable: ${e.message}`;
    throw e;
  }
  return `${layout.size} bytes`;
}

export function dumpLines(image: LuksImage): string[] {
  const { header } = image;
  const data = dataSize(image);
  if (header.version === 1) {
    const h = header.luks1;
    return [
      'LUKS1 header',
      `uuid:           ${h.uuid}`,
      `cipher:         ${h.cipherName}-${h.cipherMode}, ${h.keyBytes * 8}-bit key`,
      `hash:           ${h.hashSpec}`,
      `payload offset: ${h.payloadOffset} sectors (${h.payloadOffset * 512} bytes), data ${data}`,
      `mk digest:      ${h.mkDigestIterations} iterations`,
      'keyslots:',
      ...h.keyslots.map((k) =>
        k.active
          ? `  ${k.index}: enabled, pbkdf2 ${h.hashSpec}, ${k.iterations} iterations, material at sector ${k.keyMaterialOffset}, ${k.stripes} stripes`
          : `  ${k.index}: disabled`,
      ),
    ];
  }
  const { binary, metadata, copies } = header.luks2;
  return [
    'LUKS2 header',
    `uuid:           ${binary.uuid}`,
    `label:          ${binary.label || '(none)'}`,
    `subsystem:      ${binary.subsystem || '(none)'}`,
    `header size:    ${binary.hdrSize} bytes, seqid ${binary.seqid}, checksum ${binary.checksumAlg}`,
    ...copies.map((c) => `header copy at ${c.offset}: ${c.state}`),
    `keyslots area:  ${metadata.keyslotsSize} bytes`,
    `flags:          ${metadata.flags.join(' ') || '(none)'}`,
    'keyslots:',
    ...metadata.keyslots.map(
      (k) =>
        `  ${k.id}: luks2, ${k.keySize * 8}-bit key, ${kdfLine(k.kdf)}, af ${k.stripes} stripes ${k.afHash}, area ${k.areaOffset}+${k.areaSize} ${k.areaEncryption}${k.priority === undefined ? '' : `, priority ${k.priority}`}`,
    ),
    'segments:',
    ...metadata.segments.map(
      (s) =>
        `  ${s.id}: crypt, offset ${s.offset}, size ${s.size === 'dynamic' ? `dynamic (${data})` : s.size}, ${s.encryption}, sector ${s.sectorSize}, iv_tweak ${s.ivTweak}`,
    ),
    'digests:',
    ...metadata.digests.map(
      (d) => `  ${d.id}: pbkdf2 ${d.hash}, ${d.iterations} iterations, keyslots ${d.keyslots.join(',')}, segments ${d.segments.join(',')}`,
    ),
    `tokens:         ${metadata.tokenTypes.join(' ') || '(none)'}`,
  ];
}
