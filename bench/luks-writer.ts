// LUKS2 writer throughput (header, keyslot and a payload of SIZE MiB streamed through aes-xts-plain64 with
// 4096-byte sectors into a file) against `openssl speed -evp aes-256-xts -bytes 4096` in the same run, and the
// writer's peak resident memory, which must not grow with the image.
//   npx tsc -p . && node dist/bench/luks-writer.js [MiB=1024]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { writeLuks2 } from '../src/luks/writer.js';
import { XtsSectorCipher } from '../src/luks/xts.js';

const MIB = 1024 * 1024;
const sizeMiB = Number(process.argv[2] ?? 1024);

/** SIZE MiB of plaintext, one random MiB repeated, produced as it is consumed. */
function payload(): Readable {
  const block = randomBytes(MIB);
  let left = sizeMiB;
  return new Readable({
    highWaterMark: MIB,
    read() {
      this.push(left-- > 0 ? block : null);
    },
  });
}

/** OpenSSL's AES-256-XTS speed on 4096-byte messages, in MB/s (openssl prints 1000s of bytes per second). */
function opensslSpeed(): number {
  const out = execFileSync('openssl', ['speed', '-evp', 'aes-256-xts', '-bytes', '4096', '-seconds', '3'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const line = out.split('\n').find((l) => /^AES-256-XTS\s/i.test(l));
  if (!line) throw new Error(`no AES-256-XTS line in openssl speed's output:\n${out}`);
  return Number.parseFloat(line.trim().split(/\s+/).at(-1)!.replace(/k$/, '')) / 1000;
}

/** The writer's sector cipher alone, in memory (no stream, no file), in MB/s: where the writer's time goes. */
function sectorCipherSpeed(): number {
  const cipher = new XtsSectorCipher(randomBytes(64), 4096);
  const chunk = randomBytes(MIB);
  const chunks = 256;
  const start = process.hrtime.bigint();
  for (let i = 0; i < chunks; i++) cipher.run(false, chunk, chunk, BigInt(i * (MIB / 512)));
  return (chunks * MIB) / (Number(process.hrtime.bigint() - start) / 1e9) / 1e6;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-luks-bench-'));
  try {
    const start = process.hrtime.bigint();
    await writeLuks2({ output: path.join(dir, 'image'), source: payload(), passphrase: randomBytes(16), kdf: { type: 'pbkdf2', iterations: 1000 } });
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const writer = (sizeMiB * MIB) / seconds / 1e6;
    const peakRssMiB = process.resourceUsage().maxRSS / 1024;
    const cipherOnly = sectorCipherSpeed();
    const openssl = opensslSpeed();
    process.stdout.write(
      `LUKS2 writer, ${sizeMiB} MiB payload, 4096-byte sectors, into a file: ${writer.toFixed(0)} MB/s, peak RSS ${peakRssMiB.toFixed(0)} MiB\n`,
    );
    process.stdout.write(`its sector cipher alone (node:crypto aes-256-xts, one Cipheriv per 4096-byte sector), in memory: ${cipherOnly.toFixed(0)} MB/s\n`);
    process.stdout.write(`openssl speed -evp aes-256-xts -bytes 4096: ${openssl.toFixed(0)} MB/s\n`);
    process.stdout.write(`ratio writer / openssl: ${(writer / openssl).toFixed(2)} (target >= 0.80)\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
