import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadFiles, mapFiles } from '../../src/sys/mapped-file.js';

/** The resident KiB of this process's mapping of `path`, from /proc/self/smaps. */
function residentKiB(path: string): number {
  let inMapping = false;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inMapping = line.endsWith(` ${path}`);
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (inMapping && rss) return Number(rss[1]);
  }
  throw new Error(`${path} is not mapped`);
}

describe('mapFiles: files mapped read-only one after the other, whose pages can leave the process', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'mapped-file-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('holds the file, and once released is no longer resident yet still reads the same bytes', () => {
    const path = join(dir, 'kernel');
    const content = randomBytes(4 << 20);
    writeFileSync(path, content);
    const mapped = mapFiles([path])!;
    expect(Buffer.from(mapped.bytes).equals(content)).to.equal(true);
    expect(residentKiB(path)).to.equal(4096);
    mapped.release();
    expect(residentKiB(path)).to.equal(0);
    expect(Buffer.from(mapped.bytes).equals(content)).to.equal(true);
  });

  it('maps files one after the other without copying them when each but the last ends on a page boundary', () => {
    const [first, second] = [join(dir, 'base.cpio'), join(dir, 'run.cpio')];
    const [a, b] = [randomBytes(3 * 4096), randomBytes(5000)];
    writeFileSync(first, a);
    writeFileSync(second, b);
    const mapped = mapFiles([first, second])!;
    expect(Buffer.from(mapped.bytes).equals(Buffer.concat([a, b]))).to.equal(true);
    expect(residentKiB(first)).to.equal(12);
    expect(residentKiB(second)).to.equal(8);
    mapped.release();
    expect([residentKiB(first), residentKiB(second)]).to.deep.equal([0, 0]);
    expect(Buffer.from(mapped.bytes).equals(Buffer.concat([a, b]))).to.equal(true);
  });

  it('refuses files that cannot lie side by side: one followed by another ends inside a page', () => {
    const [first, second] = [join(dir, 'a'), join(dir, 'b')];
    writeFileSync(first, randomBytes(4097));
    writeFileSync(second, randomBytes(10));
    expect(mapFiles([first, second])).to.equal(undefined);
    expect(mapFiles([second, join(dir, 'a')])).to.equal(undefined);
  });

  it('leaves what is not a regular file to be read instead, without opening it (a FIFO would meet its writer)', () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    // With no writer, opening the FIFO would wait for one: returning at all shows it was not opened.
    expect(mapFiles([fifo])).to.equal(undefined);
    expect(mapFiles(['/dev/null'])).to.equal(undefined);
  });

  it('loads files that cannot be mapped by reading them: a FIFO with its writer, and a file followed by another inside a page', async () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const source = join(dir, 'source');
    const content = randomBytes(300_000);
    writeFileSync(source, content);
    // The writer opens the FIFO, writes and closes it, as `cat initrd > fifo &` beside a boot would.
    const writer = spawn('sh', ['-c', 'cat "$1" > "$2"', 'sh', source, fifo], { stdio: 'ignore' });
    const writerExit = new Promise<number | null>((resolve) => writer.on('exit', resolve));
    expect(Buffer.from((await loadFiles([fifo])).bytes).equals(content)).to.equal(true);
    expect(await writerExit).to.equal(0);
    const [first, second] = [join(dir, 'a'), join(dir, 'b')];
    writeFileSync(first, 'archive one');
    writeFileSync(second, 'archive two');
    const joined = await loadFiles([first, second]);
    expect(Buffer.from(joined.bytes).toString()).to.equal('archive onearchive two');
    joined.release();
  });

  it('maps an empty file as no bytes', () => {
    const path = join(dir, 'empty');
    writeFileSync(path, '');
    const mapped = mapFiles([path])!;
    expect(mapped.bytes.length).to.equal(0);
    mapped.release();
  });

  it('names the file it cannot open', () => {
    const path = join(dir, 'missing');
    expect(() => mapFiles([path])).to.throw(path);
  });
});
