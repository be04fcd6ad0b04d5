// LUKS2 writer throughput (header, keyslot and a payload of SIZE MiB streamed through aes-xts-plain64 with
// 4096-byte sectors into a file, on disk and on tmpfs) against `openssl speed -evp aes-256-xts -bytes 4096` in the
// same run (single-threaded; the writer uses one XTS thread per CPU), and the writer's peak resident memory, which
// must not grow with the image.
//   npx tsc -p . && node dist/bench/luks-writer.js [MiB=1024]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { writeLuks2 } from '../src/luks/writer.js';
import { xtsThreadCount } from '../src/luks/xts-threads.js';
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
  const dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-luks-bench-'));
  // tmpfs: the same writer with the disk taken out.
  const memoryDir = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/ts-vmm-luks-bench-') : undefined;
  try {
    // Each file measurement starts with nothing dirty in the page cache, or it would pay for the one before it.
    execFileSync('sync');
    const toFile = await writerSpeed(dir);
    const peakRssMiB = process.resourceUsage().maxRSS / 1024;
    execFileSync('sync');
    const plainToFile = await plainWriteSpeed(dir);
    const toMemory = memoryDir ? await writerSpeed(memoryDir) : undefined;
    const cipherOnly = sectorCipherSpeed();
    const openssl = opensslSpeed();
    const line = (text: string) => process.stdout.write(`${text}\n`);
    line(`openssl speed -evp aes-256-xts -bytes 4096 (one thread): ${openssl.toFixed(0)} MB/s`);
    line(
      `LUKS2 writer, ${sizeMiB} MiB payload, 4096-byte sectors, ${xtsThreadCount()} XTS threads, into a file in ${tmpdir()}: ${toFile.toFixed(0)} MB/s, ratio ${(toFile / openssl).toFixed(2)}, peak RSS ${peakRssMiB.toFixed(0)} MiB`,
    );
    line(`the same bytes unencrypted into a file there (4 MiB writes): ${plainToFile.toFixed(0)} MB/s; writer / that: ${(toFile / plainToFile).toFixed(2)}`);
    if (toMemory !== undefined) line(`the same into a file in /dev/shm (tmpfs): ${toMemory.toFixed(0)} MB/s, ratio ${(toMemory / openssl).toFixed(2)}`);
    line(`its sector cipher alone, one thread, in memory: ${cipherOnly.toFixed(0)} MB/s, ratio ${(cipherOnly / openssl).toFixed(2)}`);
    line('target: writer / openssl >= 0.80');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    if (memoryDir) rmSync(memoryDir, { recursive: true, force: true });
  }
}

await main();
