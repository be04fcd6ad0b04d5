// The boot timeline as a person sees it: the SVG carries every milestone's label, and headless Chromium
// (Debian's `chromium`) renders it into a picture with the milestones and the exit-density bars drawn.
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderTimeline, type TimelineInput } from '../../src/vmm/timeline-svg.js';
import { countPixelsNot, decodePng, type Pixels } from './png-pixels.js';

/** A boot as MachineWatch records one: milestones in ms since the VMM started, exits per 10 ms per vCPU. */
const BOOT: TimelineInput = {
  title: 'ts-vmm boot timeline',
  durationMs: 812,
  milestones: [
    { label: 'VMM start-up', atMs: 0 },
    { label: 'vCPUs start: kernel 64-bit entry', atMs: 96.4 },
    { label: 'first console line', atMs: 131.2 },
    { label: 'virtio-blk(disk.img) probe', atMs: 402.7 },
    { label: 'init', atMs: 515.9 },
  ],
  vcpus: [
    { vcpu: 0, bucketMs: 10, startMs: 0, counts: Array.from({ length: 80 }, (_, i) => (i < 10 ? 0 : i < 14 ? 4000 : (i * 37) % 300)) },
    { vcpu: 1, bucketMs: 10, startMs: 0, counts: Array.from({ length: 80 }, (_, i) => (i < 30 ? 0 : (i * 13) % 50)) },
  ],
};

const BAR_BLUE: [number, number, number] = [0x2e, 0x86, 0xc1];
const WHITE: [number, number, number] = [255, 255, 255];

function screenshot(svg: string, dir: string, name: string): Pixels {
  const file = join(dir, `${name}.svg`);
  const png = join(dir, `${name}.png`);
  writeFileSync(file, svg);
  execFileSync(
    'chromium',
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--user-data-dir=${join(dir, `profile-${name}`)}`,
      `--screenshot=${png}`,
      '--window-size=1200,700',
      `file://${file}`,
    ],
    { stdio: 'ignore', timeout: 60_000 },
  );
  return decodePng(readFileSync(png));
}

const pixelsOf = (p: Pixels, [r, g, b]: [number, number, number]) => p.width * p.height - countPixelsNot(p, [r, g, b]);

describe('boot timeline SVG', function () {
  this.timeout(120_000);

  it('labels every milestone with its time, and one exit strip per vCPU', () => {
    const svg = renderTimeline(BOOT);
    for (const m of BOOT.milestones) expect(svg).to.contain(`>${m.label} (${m.atMs.toFixed(1)} ms)</text>`);
    expect(svg).to.contain('>vCPU 0 exits</text>');
    expect(svg).to.contain('>vCPU 1 exits</text>');
    expect(svg).to.contain('peak 4000 exits per 10 ms');
  });

  it('escapes what it writes as text', () => {
    expect(renderTimeline({ ...BOOT, milestones: [{ label: 'a <b> & "c"', atMs: 1 }] })).to.contain('>a &#60;b&#62; &#38; &#34;c&#34; (1.0 ms)</text>');
  });

  it('renders in headless Chromium into a picture with the bars drawn, where an empty timeline has none', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ts-vmm-timeline-'));
    try {
      const drawn = screenshot(renderTimeline(BOOT), dir, 'boot');
      const empty = screenshot(renderTimeline({ ...BOOT, milestones: [], vcpus: [] }), dir, 'empty');
      expect(drawn.width).to.equal(1200);
      // Text, axis, milestone lines and bars: a good share of the page is not background.
      expect(countPixelsNot(drawn, WHITE)).to.be.greaterThan(20_000);
      expect(pixelsOf(drawn, BAR_BLUE)).to.be.greaterThan(2_000);
      expect(pixelsOf(empty, BAR_BLUE)).to.equal(0);
      expect(countPixelsNot(empty, WHITE)).to.be.lessThan(countPixelsNot(drawn, WHITE) / 4);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
