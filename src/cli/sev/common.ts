// What the `ts-vmm sev` commands share: output and exact-length arguments.

export const say = (line: string): boolean => process.stdout.write(`${line}\n`);

export function exactly(bytes: Buffer, length: number, what: string): Buffer {
  if (bytes.length !== length) throw new Error(`${what} is ${bytes.length} bytes, expected ${length}`);
  return bytes;
}
