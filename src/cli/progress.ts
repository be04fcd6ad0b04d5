// Progress of long work on stderr, in the form of cryptsetup reencrypt's line ("Progress:  42.0%, ETA 00:12,
// 108 MiB written, speed 245.1 MiB/s"), redrawn in place. Only on a terminal: piped or redirected stderr gets
// nothing, so logs and scripts see no carriage-return noise.

const MiB = 1024 * 1024;
/** Redraws at most this often. */
const REDRAW_MS = 250;

function clock(seconds: number): string {
  const whole = Math.max(0, Math.round(seconds));
  const [h, m, s] = [Math.floor(whole / 3600), Math.floor(whole / 60) % 60, whole % 60];
  const two = (n: number) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
}

/** One progress line: percent done, time left at the rate so far, MiB done and the rate. */
export function formatProgress(done: number, total: number, elapsedSeconds: number): string {
  const fraction = total > 0 ? Math.min(1, done / total) : 1;
  const rate = elapsedSeconds > 0 ? done / elapsedSeconds : 0;
  const eta = rate > 0 ? clock((total - done) / rate) : '--:--';
  const percent = `${(fraction * 100).toFixed(1)}%`.padStart(6);
  return `Progress: ${percent}, ETA ${eta}, ${Math.floor(done / MiB)} MiB written, speed ${(rate / MiB).toFixed(1)} MiB/s`;
}

export interface ProgressLine {
  update(done: number, total: number): void;
  /** Draws the last state and ends the line. */
  finish(): void;
}

/** A progress line on `stream` when it is a terminal; undefined otherwise. */
export function terminalProgress(stream: NodeJS.WriteStream, now: () => number = () => performance.now()): ProgressLine | undefined {
  if (!stream.isTTY) return undefined;
  const start = now();
  let drawn = -Infinity;
  let last: [number, number] | undefined;
  const draw = () => {
    if (last) stream.write(`\r${formatProgress(last[0], last[1], (now() - start) / 1000)}`);
  };
  return {
    update(done, total) {
      last = [done, total];
      if (now() - drawn < REDRAW_MS) return;
      drawn = now();
      draw();
    },
    finish() {
      draw();
      if (last) stream.write('\n');
    },
  };
}
