// `ts-vmm mkcw` of a rootfs of SIZE MiB against `cryptsetup reencrypt --encrypt` of the same ext4 image, in the
// same run, with the same cipher, sector size and keyslot KDF cost (PBKDF2, 1000 iterations, so the KDF is
// noise on both sides). mkcw also builds the ext4 filesystem (mke2fs -d), which the peer is handed ready-made, so
// the parts are measured as well: mkcw's own encryption (the LUKS2 writer over the ext4 filesystem where mkcw
// makes it, 16 MiB into the image, in place) against cryptsetup's (in place too, on a copy of the same ext4), and
// mkcw whole against mke2fs plus cryptsetup.
//   npm run build && node dist/bench/mkcw.js [MiB=256] [runs=3]
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_DATA_OFFSET, writeLuks2 } from '../src/luks/writer.js';
import { buildExt4Image } from '../src/oci/root-disk.js';
import { sizeTree } from '../src/oci/tree-hash.js';
import { cliEntry, projectFile } from '../src/sys/project-paths.js';
import { median } from './measure.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const sizeMiB = Number(process.argv[2] ?? 256);
const runs = Number(process.argv[3] ?? 3);
const KDF_ARGS = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];

async function seconds(work: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** A bundle whose rootfs holds SIZE MiB of random data in 4 MiB files (and the hello example's config). */
function makeBundle(dir: string): string {
  const bundle = join(dir, 'bundle');
  cpSync(projectFile('examples', 'hello'), bundle, { recursive: true });
  mkdirSync(join(bundle, 'rootfs', 'data'), { recursive: true });
  for (let i = 0; i < sizeMiB / 4; i++) writeFileSync(join(bundle, 'rootfs', 'data', `f${i}`), randomBytes(4 * MiB));
  return bundle;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ts-vmm-mkcw-bench-'));
  try {
    const bundle = makeBundle(dir);
    const pass = join(dir, 'pass');
    writeFileSync(pass, randomBytes(32).toString('hex'), { mode: 0o600 });
    const rootfs = join(bundle, 'rootfs');
    const ext4 = join(dir, 'rootfs.ext4');
    const peer = join(dir, 'peer.img');
    const reencrypt = ['reencrypt', '--encrypt', '--type', 'luks2', '--cipher', 'aes-xts-plain64', '--key-size', '512', '--sector-size', '4096'];
    const times = { mkcw: [] as number[], ext4: [] as number[], writer: [] as number[], cryptsetup: [] as number[], detached: [] as number[] };
    let contentBytes = 0;
    // Every step starts with nothing dirty in the page cache (sync), and ends with its output on disk: mkcw and
    // cryptsetup sync their image themselves, the writer alone is followed by an fsync here.
    const step = async (work: () => Promise<unknown>) => {
      await exec('sync');
      return seconds(work);
    };
    for (let run = 0; run < runs; run++) {
      rmSync(join(dir, 'cw.img'), { force: true });
      times.mkcw.push(await step(() => exec(process.execPath, [cliEntry(), 'mkcw', bundle, join(dir, 'cw.img'), '--passphrase-file', pass, ...KDF_ARGS])));
      // The ext4 filesystem mkcw builds (same size rule: a quarter of the content free, at least 10 MiB), where mkcw
      // builds it: 16 MiB into the image, room for the LUKS2 header.
      const written = join(dir, 'writer.img');
      rmSync(written, { force: true });
      const freeMiB = (bytes: number) => Math.max(10, Math.ceil((bytes * 0.25) / MiB));
      times.ext4.push(
        await step(async () => {
          const summary = sizeTree(rootfs);
          contentBytes = summary.bytes;
          await buildExt4Image(rootfs, summary, written, true, freeMiB(summary.bytes), [], DEFAULT_DATA_OFFSET);
        }),
      );
      times.writer.push(
        await step(async () => {
          const inPlace = statSync(written).size - DEFAULT_DATA_OFFSET;
          await writeLuks2({ output: written, source: { inPlace }, passphrase: Buffer.from('bench'), kdf: { type: 'pbkdf2', iterations: 1000 } });
          const file = await open(written, 'r');
          await file.sync();
          await file.close();
        }),
      );
      rmSync(written);
      // The same filesystem on its own, for the peer.
      rmSync(ext4, { force: true });
      await buildExt4Image(rootfs, sizeTree(rootfs), ext4, true, freeMiB(contentBytes));
      // The peer: cryptsetup encrypts the ext4 image in place, shifting it to make room for the header at its start.
      copyFileSync(ext4, peer);
      truncateSync(peer, statSync(ext4).size + 32 * MiB);
      times.cryptsetup.push(
        await step(() => exec('cryptsetup', [...reencrypt, '--reduce-device-size', '32M', ...KDF_ARGS, '--batch-mode', '--key-file', pass, peer])),
      );
      // The same with a detached header: nothing shifted, the image encrypted where it lies.
      copyFileSync(ext4, peer);
      rmSync(join(dir, 'peer.hdr'), { force: true });
      times.detached.push(
        await step(() => exec('cryptsetup', [...reencrypt, '--header', join(dir, 'peer.hdr'), ...KDF_ARGS, '--batch-mode', '--key-file', pass, peer])),
      );
    }
    const [mkcw, ext4Build, writer, cryptsetup, detached] = [times.mkcw, times.ext4, times.writer, times.cryptsetup, times.detached].map(median) as [
      number,
      number,
      number,
      number,
      number,
    ];
    const line = (text: string) => process.stdout.write(`${text}\n`);
    line(`rootfs ${(contentBytes / MiB).toFixed(0)} MiB, ext4 image ${(statSync(ext4).size / MiB).toFixed(0)} MiB; medians of ${runs} runs`);
    line(`ts-vmm mkcw (whole command): ${mkcw.toFixed(2)} s`);
    line(`  its parts, separately: size walk + mke2fs -d ${ext4Build.toFixed(2)} s, LUKS2 writer over it, in place (+ fsync) ${writer.toFixed(2)} s`);
    line(`cryptsetup reencrypt --encrypt --reduce-device-size 32M of the ext4 image: ${cryptsetup.toFixed(2)} s`);
    line(`cryptsetup reencrypt --encrypt --header (detached) of the ext4 image: ${detached.toFixed(2)} s`);
    line(`ratio LUKS2 writer / cryptsetup reencrypt: ${(writer / cryptsetup).toFixed(2)} (target <= 1.2)`);
    line(`ratio mkcw / (mke2fs + cryptsetup reencrypt): ${(mkcw / (ext4Build + cryptsetup)).toFixed(2)}`);
    line(`ratio mkcw / cryptsetup reencrypt alone: ${(mkcw / cryptsetup).toFixed(2)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
