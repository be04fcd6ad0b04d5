// `--stats`: what each vCPU did over one run, from its exit recorder: exits per reason and per device,
// time inside KVM_RUN (the guest) against time outside it (the VMM: dispatch, devices, waiting for the
// device thread), and the bytes each device moved through exits.
import type { ExitReason, VcpuRecord } from '../kvm/exit-recorder.js';

export interface VcpuStats {
  vcpu: number;
  exits: number;
  exitsByReason: Partial<Record<ExitReason, number>>;
  /** Devices the vCPU reached, busiest first. */
  devices: { name: string; exits: number; bytes: number }[];
  guestMs: number;
  vmmMs: number;
}

export interface RunStats {
  vcpus: VcpuStats[];
  /** Summed over the vCPUs, per device: exits and bytes moved through them. */
  devices: { name: string; exits: number; bytes: number }[];
}

export function runStats(records: readonly VcpuRecord[]): RunStats {
  const totals = new Map<string, { name: string; exits: number; bytes: number }>();
  const vcpus = records.map((record, vcpu) => {
    const devices = record.devices
      .filter((d) => d.exits > 0)
      .map(({ name, exits, bytes }) => ({ name, exits, bytes }))
      .sort(busiestFirst);
    for (const d of devices) {
      const total = totals.get(d.name) ?? { name: d.name, exits: 0, bytes: 0 };
      total.exits += d.exits;
      total.bytes += d.bytes;
      totals.set(d.name, total);
    }
    const exits = Object.values(record.exitsByReason).reduce((a, b) => a + b, 0);
    return { vcpu, exits, exitsByReason: record.exitsByReason, devices, guestMs: round(record.guestMs), vmmMs: round(record.vmmMs) };
  });
  return { vcpus, devices: [...totals.values()].sort(busiestFirst) };
}

const busiestFirst = (a: { name: string; exits: number }, b: { name: string; exits: number }) => b.exits - a.exits || a.name.localeCompare(b.name);
const round = (ms: number) => Math.round(ms * 1000) / 1000;

export function formatRunStats(stats: RunStats): string {
  const lines: string[] = [];
  for (const v of stats.vcpus) {
    const total = v.guestMs + v.vmmMs;
    const share = total > 0 ? ` (${((100 * v.guestMs) / total).toFixed(1)}% in the guest)` : '';
    lines.push(`vcpu${v.vcpu}: ${v.exits} exits; ${v.guestMs.toFixed(1)} ms in the guest, ${v.vmmMs.toFixed(1)} ms in the VMM${share}`);
    const reasons = Object.entries(v.exitsByReason).sort((a, b) => b[1] - a[1]);
    lines.push(`  by reason: ${reasons.map(([reason, n]) => `${reason} ${n}`).join(', ') || 'none'}`);
    for (const d of v.devices) lines.push(`  ${d.name.padEnd(36)} ${String(d.exits).padStart(9)} exits ${String(d.bytes).padStart(10)} bytes`);
  }
  return `${lines.join('\n')}\n`;
}
