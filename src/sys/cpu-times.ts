// A process's or thread's CPU time from its /proc stat file: what benchmarks report and the lab's stall watch reads.
import { readFileSync } from 'node:fs';

const TICK_MS = 10; // USER_HZ is 100 on Linux

export interface CpuTimes {
  /** utime, which includes guest mode, in ms. */
  user: number;
  system: number;
  total: number;
  /** guest_time, in ms (part of user). */
  guest: number;
}

/** `/proc/PID/stat` (all threads, ended ones included) or `/proc/PID/task/TID/stat`; throws once it is gone. */
export function cpuTimes(statPath: string): CpuTimes {
  const stat = readFileSync(statPath, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ", which may hold spaces and parentheses: state is field 3, utime 14, stime 15, guest_time 43.
  const [user, system, guest] = [fields[11], fields[12], fields[40]].map((f) => Number(f) * TICK_MS) as [number, number, number];
  return { user, system, total: user + system, guest };
}
