// GUIDs as EFI stores them: the first three groups little-endian, the last eight bytes as written.
// The spellings sevctl's UUID parser takes: hyphenated, 32 hex digits, braced, or as a urn:uuid: URN.
const hyphenated = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i;
const simple = /^([0-9a-f]{8})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{12})$/i;

export function guidBytes(text: string): Buffer {
  const bare = /^\{.*\}$/s.test(text) ? text.slice(1, -1) : text.toLowerCase().startsWith('urn:uuid:') ? text.slice(9) : text;
  const m = hyphenated.exec(bare) ?? simple.exec(bare);
  if (!m) throw new RangeError(`"${text}" is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, 32 hex digits, or braced)`);
  const out = Buffer.alloc(16);
  out.writeUInt32LE(Number.parseInt(m[1]!, 16), 0);
  out.writeUInt16LE(Number.parseInt(m[2]!, 16), 4);
  out.writeUInt16LE(Number.parseInt(m[3]!, 16), 6);
  Buffer.from(m[4]! + m[5]!, 'hex').copy(out, 8);
  return out;
}

export function guidText(bytes: Uint8Array): string {
  if (bytes.length !== 16) throw new RangeError('a GUID is 16 bytes');
  const b = Buffer.from(bytes);
  const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');
  return `${hex(b.readUInt32LE(0), 8)}-${hex(b.readUInt16LE(4), 4)}-${hex(b.readUInt16LE(6), 4)}-${b.subarray(8, 10).toString('hex')}-${b.subarray(10).toString('hex')}`;
}
