// LUKS2 writer throughput (header, keyslot and a payload of SIZE MiB streamed through aes-xts-plain64 with
// 4096-byte sectors into a new file) against the same bytes written unencrypted into a new file on the same file
// system (on disk and on tmpfs), and its sector cipher alone against `openssl speed -evp aes-256-xts -bytes 4096`
// (both one thread), in the same run; medians of RUNS interleaved rounds. Also the writer's peak resident memory,
// which must not grow with the image.
//   npm run build && node dist/bench/luks-writer.js [MiB=1024] [RUNS=3]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { writeLuks2 } from '../src/luks/writer.js';
import { median } from './measure.js';
import { xtsThreadCount } from '../src/luks/xts-threads.js';
import { XtsSectorCipher } from '../src/luks/xts.js';

const MIB = 1024 * 1024;
const sizeMiB = Number(process.argv[2] ?? 1024);
const runs = Number(process.argv[3] ?? 3);

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

/** The writer's sector cipher alone, one thread, in memory (no stream, no file), in MB/s. */
function sectorCipherSpeed(): number {
  const cipher = new XtsSectorCipher(randomBytes(64), 4096);
  const chunk = randomBytes(4 * MIB);
  const chunks = 256;
  const start = process.hrtime.bigint();
  for (let i = 0; i < chunks; i++) cipher.run(false, chunk, chunk, BigInt(i * ((4 * MIB) / 512)));
  return (chunks * 4 * MIB) / (Number(process.hrtime.bigint() - start) / 1e9) / 1e6;
}

/** The whole writer (header, keyslot, payload from a stream) into a file in `dir`, in MB/s of payload. */
async function writerSpeed(dir: string): Promise<number> {
  const output = path.join(dir, 'image');
  const start = process.hrtime.bigint();
  await writeLuks2({ output, source: payload(), passphrase: randomBytes(16), kdf: { type: 'pbkdf2', iterations: 1000 } });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  rmSync(output);
  return (sizeMiB * MIB) / seconds / 1e6;
}

/** The same number of bytes written unencrypted into a file in `dir` in 4 MiB writes: the file system's own speed. */
async function plainWriteSpeed(dir: string): Promise<number> {
  const output = path.join(dir, 'plain');
  const block = randomBytes(4 * MIB);
  const start = process.hrtime.bigint();
  const file = await open(output, 'w', 0o600);
  try {
    for (let at = 0; at < sizeMiB * MIB; at += block.length) await file.write(block, 0, block.length, at);
  } finally {
    await file.close();
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  rmSync(output);
  return (sizeMiB * MIB) / seconds / 1e6;
}

async function main(): Promise<void> {
  const dirs = [mkdtempSync(path.join(tmpdir(), 'ts-vmm-luks-bench-'))];
  // tmpfs: the same writer with the disk taken out.
  if (existsSync('/dev/shm')) dirs.push(mkdtempSync('/dev/shm/ts-vmm-luks-bench-'));
  const samples = dirs.map(() => ({ writer: [] as number[], plain: [] as number[] }));
  const cipher: number[] = [];
  const openssl: number[] = [];
  let peakRssMiB = 0;
  try {
    for (let round = 0; round < runs; round++) {
      for (const [i, dir] of dirs.entries()) {
        // Each file measurement starts with nothing dirty in the page cache, or it would pay for the one before it.
        execFileSync('sync');
        samples[i]!.writer.push(await writerSpeed(dir));
        peakRssMiB = Math.max(peakRssMiB, process.resourceUsage().maxRSS / 1024);
        execFileSync('sync');
        samples[i]!.plain.push(await plainWriteSpeed(dir));
      }
      cipher.push(sectorCipherSpeed());
      openssl.push(opensslSpeed());
    }
  } finally {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
  const line = (text: string) => process.stdout.write(`${text}\n`);
  const mbs = (xs: number[]) => `${median(xs).toFixed(0)} MB/s (${xs.map((x) => x.toFixed(0)).join(', ')})`;
  line(`medians of ${runs} interleaved rounds, ${sizeMiB} MiB payload, 4096-byte sectors, ${xtsThreadCount()} XTS threads; samples in brackets`);
  line(`sector cipher alone, one thread, in memory: ${mbs(cipher)}`);
  line(`openssl speed -evp aes-256-xts -bytes 4096, one thread: ${mbs(openssl)}`);
  line(`  cipher / openssl: ${(median(cipher) / median(openssl)).toFixed(2)} (target >= 0.80)`);
  for (const [i, dir] of dirs.entries()) {
    const { writer, plain } = samples[i]!;
    line(`LUKS2 writer into a new file in ${path.dirname(dir)}: ${mbs(writer)}`);
    line(`the same bytes unencrypted into a new file there (4 MiB writes): ${mbs(plain)}`);
    line(`  writer / unencrypted: ${(median(writer) / median(plain)).toFixed(2)}; writer / openssl: ${(median(writer) / median(openssl)).toFixed(2)}`);
  }
  line(`writer peak resident memory: ${peakRssMiB.toFixed(0)} MiB`);
}

await main();
