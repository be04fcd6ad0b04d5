// `--timeline FILE.svg`: one boot as a picture a browser opens. Milestones (VMM start-up, the first
// instruction, each virtio device's probe, the first console line, ...) are marked on one time axis,
// each on a row of its own so labels never overlap, and under them one strip per vCPU shows how many
// exits it took over time (bar height on a log scale: a boot's exit rate spans five decades).

export interface TimelineMilestone {
  label: string;
  /** ms since the VMM process started. */
  atMs: number;
}

export interface TimelineVcpu {
  vcpu: number;
  /** Exits per bucket; bucket 0 starts `startMs` after the VMM started. */
  counts: readonly number[];
  bucketMs: number;
  startMs: number;
}

export interface TimelineInput {
  title: string;
  durationMs: number;
  milestones: readonly TimelineMilestone[];
  vcpus: readonly TimelineVcpu[];
}

const WIDTH = 1200;
const LEFT = 170;
const RIGHT = 30;
const ROW = 22;
const STRIP = 60;
const PLOT = WIDTH - LEFT - RIGHT;

const escapeXml = (text: string) => text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A round step for axis ticks: about eight ticks over the run. */
function tickStep(durationMs: number): number {
  const rough = durationMs / 8;
  const power = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) ?? rough;
}

export function renderTimeline(input: TimelineInput): string {
  const duration = Math.max(input.durationMs, 1);
  const x = (ms: number) => LEFT + (Math.min(Math.max(ms, 0), duration) / duration) * PLOT;
  const milestones = [...input.milestones].sort((a, b) => a.atMs - b.atMs);
  const axisY = 50;
  const milestoneTop = axisY + 20;
  const stripsTop = milestoneTop + milestones.length * ROW + 20;
  const height = stripsTop + input.vcpus.length * (STRIP + 20) + 30;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="24" font-size="16" font-weight="bold">${escapeXml(input.title)}</text>`,
    `<line x1="${LEFT}" y1="${axisY}" x2="${LEFT + PLOT}" y2="${axisY}" stroke="#333333"/>`,
  ];
  const step = tickStep(duration);
  for (let t = 0; t <= duration; t += step) {
    out.push(`<line x1="${x(t).toFixed(1)}" y1="${axisY - 4}" x2="${x(t).toFixed(1)}" y2="${height - 20}" stroke="#dddddd"/>`);
    out.push(`<text x="${x(t).toFixed(1)}" y="${axisY - 8}" text-anchor="middle" fill="#555555">${t.toFixed(step < 1 ? 1 : 0)} ms</text>`);
  }
  milestones.forEach((m, i) => {
    const y = milestoneTop + i * ROW + 14;
    const at = x(m.atMs).toFixed(1);
    const rightHalf = m.atMs > duration / 2;
    out.push(`<line x1="${at}" y1="${axisY}" x2="${at}" y2="${height - 20}" stroke="#c0392b" stroke-dasharray="3,3"/>`);
    out.push(`<circle cx="${at}" cy="${y - 4}" r="4" fill="#c0392b"/>`);
    out.push(
      `<text x="${rightHalf ? Number(at) - 8 : Number(at) + 8}" y="${y}" text-anchor="${rightHalf ? 'end' : 'start'}">${escapeXml(m.label)} (${m.atMs.toFixed(1)} ms)</text>`,
    );
  });
  input.vcpus.forEach((v, i) => {
    const top = stripsTop + i * (STRIP + 20);
    const base = top + STRIP;
    out.push(`<text x="10" y="${top + STRIP / 2}">vCPU ${v.vcpu} exits</text>`);
    out.push(`<rect x="${LEFT}" y="${top}" width="${PLOT}" height="${STRIP}" fill="#f4f6f8" stroke="#cccccc"/>`);
    const peak = Math.max(1, ...v.counts);
    const scale = (n: number) => (n > 0 ? (Math.log10(n + 1) / Math.log10(peak + 1)) * (STRIP - 4) : 0);
    // One bar per pixel column at most: buckets that land in the same column add up.
    const columns = new Map<number, number>();
    v.counts.forEach((n, bucket) => {
      if (n === 0) return;
      const column = Math.floor(x(v.startMs + bucket * v.bucketMs));
      columns.set(column, (columns.get(column) ?? 0) + n);
    });
    const bar = Math.max(1, (v.bucketMs / duration) * PLOT);
    for (const [column, n] of columns) {
      const h = scale(n);
      out.push(`<rect x="${column}" y="${(base - h).toFixed(1)}" width="${bar.toFixed(1)}" height="${h.toFixed(1)}" fill="#2e86c1"/>`);
    }
    out.push(`<text x="${LEFT + PLOT}" y="${top - 4}" text-anchor="end" fill="#555555">peak ${peak} exits per ${v.bucketMs} ms</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
