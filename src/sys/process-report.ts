// What processes are doing, from /proc, for diagnosing a hang: each process's state and wait channel, and each
// thread's state, the system call it is in and its kernel stack (the stack needs root).
import { readdirSync, readFileSync } from 'node:fs';

export const readOr = (path: string, fallback: string): string => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
};

/** The numbered entries of /proc: every process. */
export const processIds = (): string[] => readdirSync('/proc').filter((name) => /^\d+$/.test(name));

/** The State line of a /proc status file ("S (sleeping)"). */
const stateOf = (status: string): string => /^State:\s+(.*)$/m.exec(status)?.[1] ?? '?';

/** One process: its state, wait channel and command line, then each thread; empty for a kernel thread or a process gone. */
export function processLines(pid: string | number): string[] {
  const cmdline = readOr(`/proc/${pid}/cmdline`, '').split('\0').join(' ').trim();
  if (cmdline === '') return [];
  const lines = [`pid ${pid} ${stateOf(readOr(`/proc/${pid}/status`, ''))} wchan=${readOr(`/proc/${pid}/wchan`, '?')} ${cmdline.slice(0, 200)}`];
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    /* it ended meanwhile */
  }
  for (const tid of tasks) {
    const task = `/proc/${pid}/task/${tid}`;
    const stack = readOr(`${task}/stack`, '').trim();
    lines.push(
      `  tid ${tid} ${readOr(`${task}/comm`, '?').trim()} ${stateOf(readOr(`${task}/status`, ''))} syscall=${readOr(`${task}/syscall`, '?').split(' ')[0]?.trim()}${stack ? `\n${stack.replace(/^/gm, '    ')}` : ''}`,
    );
  }
  return lines;
}

/** Every process, with the machine's load and memory first. */
export function processReport(): string[] {
  return [
    `load ${readOr('/proc/loadavg', '?').trim()}; ${readOr('/proc/meminfo', '').split('\n').slice(0, 3).join('; ')}`,
    ...processIds().flatMap(processLines),
  ];
}
