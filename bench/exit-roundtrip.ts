// Cost of one guest exit to the VMM and back: a real-mode guest executes `out 0x80, al` N times.
// Measured in the same run for the C peer (bench/exit-roundtrip.c, compiled here with gcc -O2) and
// for ts-vmm's paths: KVM_RUN on the main thread, in a vCPU thread answering a vCPU-local range,
// and in a vCPU thread handing the access to a device on the main thread (a posted write; and, with
// `in al, 0x80` instead, a read that waits for the device thread's answer).
// Thread timings include starting the worker, so they are taken as the difference between N exits
// and 1 exit. Also times a bare ioctl (KVM_CHECK_EXTENSION) through koffi against C, and a guest
// notification ping-pong (guest notifies, the device thread answers in guest memory) through an
// ioeventfd and the eventfd poller against the same through a posted mailbox write.
// Given another build's directory (e.g. a worktree of an earlier commit, built, with this file's build copied
// to its dist/bench/), each round also times the unwatched vCPU-thread paths in two fresh processes, this
// build's and that one's (`--threads-only`): the A/B of a change to the vCPU loop, same harness, other modules.
// EXIT_ROUNDTRIP_C names a C peer built elsewhere (gcc -O2 -static), for a machine without a compiler (the lab).
//   npm run build && node dist/bench/exit-roundtrip.js [exits] [rounds] [other-build-dir]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bus, type BusDevice } from '../src/devices/bus.js';
import { EventFd } from '../src/sys/eventfd.js';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { KVM_CAP_USER_MEMORY } from '../src/kvm/constants.js';
import { busAccess } from '../src/kvm/io-dispatch.js';
import { Kvm } from '../src/kvm/kvm.js';
import type { IoBuses } from '../src/kvm/types.js';
import type { Vcpu } from '../src/kvm/vcpu.js';
import type { Vm } from '../src/kvm/vm.js';
import { VcpuThreads } from '../src/kvm/vcpu-threads.js';
import type { ExitRecorderDescriptor } from '../src/kvm/exit-recorder.js';
import { median } from './measure.js';

const exits = Number(process.argv[2] ?? 200_000);
const rounds = Number(process.argv[3] ?? 3);
const threadsOnly = process.argv[4] === '--threads-only';
const otherBuild = threadsOnly ? undefined : process.argv[4];
const PORT = 0x80;
const OUT = 0xe6; // out imm8, al
const IN = 0xe4; // in al, imm8
const guestCode = (access: number) => [access, PORT, 0x66, 0x49, 0x75, 0xfa, 0xf4]; // l: out/in 0x80; dec ecx; jnz l; hlt

const kvm = Kvm.open();

/**
 * Ping-pong with the device thread: l: mov byte [0x8000], 0; out 0x80, al; w: cmp byte [0x8000], 0;
 * je w; dec ecx; jnz l; hlt. The guest waits in guest memory, not in an exit, for each answer.
 */
const PING_PONG = [0xc6, 0x06, 0x00, 0x80, 0x00, OUT, PORT, 0x80, 0x3e, 0x00, 0x80, 0x00, 0x74, 0xf9, 0x66, 0x49, 0x75, 0xee, 0xf4];
const PONG_FLAG = 0x8000;

function guestWith(iterations: number, access = OUT, code = guestCode(access)): { vcpu: Vcpu; memory: GuestMemory; vm: Vm; close(): void } {
  const vm = kvm.createVm();
  const memory = GuestMemory.anonymous([{ guestAddress: 0, size: 0x10000 }]);
  vm.registerMemory(memory);
  vm.setTssAddress(0xfffb_d000);
  memory.write(0x1000, new Uint8Array(code));
  const vcpu = vm.createVcpu(0);
  const sregs = vcpu.getSregs();
  sregs.cs.base = 0n;
  sregs.cs.selector = 0;
  vcpu.setSregs(sregs);
  vcpu.setRegs({ ...vcpu.getRegs(), rip: 0x1000n, rflags: 0x2n, rcx: BigInt(iterations) });
  return {
    vcpu,
    memory,
    vm,
    close: () => {
      vcpu.close();
      vm.close();
    },
  };
}

class Counter implements BusDevice {
  count = 0;
  read(_offset: number, data: Uint8Array): void {
    data[0] = 0;
    this.count++;
  }
  write(): void {
    this.count++;
  }
}

function buses(device?: BusDevice): IoBuses {
  const b = { pio: new Bus('pio'), mmio: new Bus('mmio') };
  if (device) b.pio.insert(device, PORT, 1, 'post-code');
  return b;
}

function compileC(): { binary: string; cleanup(): void } {
  const prebuilt = process.env.EXIT_ROUNDTRIP_C;
  if (prebuilt) return { binary: path.resolve(prebuilt), cleanup: () => {} };
  const dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-exit-bench-'));
  const source = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'exit-roundtrip.c');
  const binary = path.join(dir, 'exit-roundtrip');
  execFileSync('gcc', ['-O2', '-Wall', '-o', binary, source]);
  return { binary, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

function runC(binary: string, args: string[]): number {
  const [count, ns] = execFileSync(binary, args, { encoding: 'utf8' }).trim().split(' ').map(Number);
  return ns! / count! / 1000;
}

/** µs per exit, KVM_RUN on this thread with the same bus lookup the threads do. */
function tsInline(): number {
  const { vcpu, close } = guestWith(exits);
  const device = new Counter();
  const pio = buses(device).pio;
  const start = process.hrtime.bigint();
  for (;;) {
    const exit = vcpu.run();
    if (exit.kind === 'io') busAccess(pio, exit.port, exit.direction === 'out', exit.size, exit.count, exit.data);
    else if (exit.kind === 'hlt') break;
    else throw new Error(`unexpected exit ${exit.kind}`);
  }
  const us = Number(process.hrtime.bigint() - start) / 1000 / exits;
  close();
  if (device.count !== exits) throw new Error(`counted ${device.count} exits, expected ${exits}`);
  return us;
}

type ThreadPath = 'local' | 'posted write' | 'read';
/** What the VMM watches: nothing (no recorder, as without --trace/--stats), counters only (--stats), or a ring of port events too (--trace pio). */
type Watch = 'off' | 'stats' | 'trace';

// Imported only when watching, so that this harness also runs on a build from before the recorder.
async function recorders(watch: Watch): Promise<ExitRecorderDescriptor[] | undefined> {
  if (watch === 'off') return undefined;
  const { createRecorderDescriptor } = await import('../src/kvm/exit-recorder.js');
  const events = { exits: false, pio: watch === 'trace', mmio: false };
  const ranges = [{ space: 'pio' as const, base: PORT, size: 1, name: 'post-code' }];
  return [
    createRecorderDescriptor({ ringSlots: watch === 'trace' ? 1000 : 1, lossless: false, events, ranges, bucketMs: 10, originMs: performance.timeOrigin }),
  ];
}

/** Microseconds from start() until the vCPU halted. */
async function threadsRun(iterations: number, path: ThreadPath, watch: Watch): Promise<number> {
  const local = path === 'local';
  const { vcpu, close } = guestWith(iterations, path === 'read' ? IN : OUT);
  const device = new Counter();
  const threads = new VcpuThreads([vcpu], local ? buses() : buses(device), {
    localRanges: local ? [{ space: 'pio', base: PORT, size: 1, name: 'post-code', kind: 'absent' }] : [],
    recorders: await recorders(watch),
  });
  const start = process.hrtime.bigint();
  threads.start();
  const [stop] = await threads.stopped;
  const us = Number(process.hrtime.bigint() - start) / 1000;
  close();
  if (stop!.reason !== 'hlt') throw new Error(stop!.message);
  if (!local && device.count !== iterations) throw new Error(`counted ${device.count} exits, expected ${iterations}`);
  return us;
}

async function tsThreads(path: ThreadPath, watch: Watch = 'off'): Promise<number> {
  const fixed = await threadsRun(1, path, watch);
  return ((await threadsRun(exits, path, watch)) - fixed) / (exits - 1);
}

interface ThreadPaths {
  local: number;
  posted: number;
  read: number;
}

/** The unwatched vCPU-thread paths timed by a build's copy of this harness, in a process of its own. */
function threadPathsIn(buildDir: string): ThreadPaths {
  const harness = path.join(buildDir, 'dist', 'bench', 'exit-roundtrip.js');
  return JSON.parse(execFileSync(process.execPath, [harness, String(exits), '1', '--threads-only'], { encoding: 'utf8' }));
}

if (threadsOnly) {
  const timed = (path: ThreadPath): Promise<number> => {
    process.stderr.write(`exit-roundtrip: --threads-only: ${path}\n`);
    return tsThreads(path);
  };
  const paths: ThreadPaths = { local: await timed('local'), posted: await timed('posted write'), read: await timed('read') };
  kvm.close();
  process.stdout.write(`${JSON.stringify(paths)}\n`);
  process.exit(0);
}

/** Microseconds per guest notification answered by the device thread. */
async function pingPong(via: 'ioeventfd' | 'mailbox', iterations: number): Promise<number> {
  const { vcpu, memory, vm, close } = guestWith(iterations, OUT, PING_PONG);
  const answer = () => memory.writeU8(PONG_FLAG, 1);
  const b = buses();
  const notify = new EventFd();
  if (via === 'ioeventfd') {
    vm.ioeventfd(notify, { space: 'pio', address: PORT, length: 1 });
    notify.listen(answer);
  } else {
    b.pio.insert({ read: () => undefined, write: answer }, PORT, 1, 'doorbell');
  }
  const threads = new VcpuThreads([vcpu], b);
  const start = process.hrtime.bigint();
  threads.start();
  const [stop] = await threads.stopped;
  const us = Number(process.hrtime.bigint() - start) / 1000;
  notify.close();
  close();
  if (stop!.reason !== 'hlt') throw new Error(stop!.message);
  return us;
}

async function tsPingPong(via: 'ioeventfd' | 'mailbox'): Promise<number> {
  const notifications = Math.max(2, Math.floor(exits / 10));
  const fixed = await pingPong(via, 1);
  return ((await pingPong(via, notifications)) - fixed) / (notifications - 1);
}

function tsIoctl(): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < exits; i++) kvm.checkExtension(KVM_CAP_USER_MEMORY);
  return Number(process.hrtime.bigint() - start) / 1000 / exits;
}

const c = compileC();
const samples = {
  c: [] as number[],
  inline: [] as number[],
  local: [] as number[],
  localStats: [] as number[],
  localTrace: [] as number[],
  posted: [] as number[],
  postedStats: [] as number[],
  read: [] as number[],
  cIoctl: [] as number[],
  tsIoctl: [] as number[],
  pingIoeventfd: [] as number[],
  pingMailbox: [] as number[],
  ownLocal: [] as number[],
  ownPosted: [] as number[],
  ownRead: [] as number[],
  otherLocal: [] as number[],
  otherPosted: [] as number[],
  otherRead: [] as number[],
};
/** Says on stderr what is measured next, so that a run which stops shows where. */
async function step<T>(round: number, what: string, measure: () => T | Promise<T>): Promise<T> {
  process.stderr.write(`exit-roundtrip: round ${round + 1}/${rounds}: ${what}\n`);
  return measure();
}

try {
  for (let r = 0; r < rounds; r++) {
    samples.c.push(await step(r, 'c', () => runC(c.binary, [String(exits)])));
    samples.inline.push(await step(r, 'inline', () => tsInline()));
    samples.local.push(await step(r, 'local', () => tsThreads('local')));
    samples.localStats.push(await step(r, 'localStats', () => tsThreads('local', 'stats')));
    samples.localTrace.push(await step(r, 'localTrace', () => tsThreads('local', 'trace')));
    samples.posted.push(await step(r, 'posted', () => tsThreads('posted write')));
    samples.postedStats.push(await step(r, 'postedStats', () => tsThreads('posted write', 'stats')));
    samples.read.push(await step(r, 'read', () => tsThreads('read')));
    samples.cIoctl.push(await step(r, 'cIoctl', () => runC(c.binary, ['ioctl', String(exits)])));
    samples.tsIoctl.push(await step(r, 'tsIoctl', () => tsIoctl()));
    samples.pingIoeventfd.push(await step(r, 'pingIoeventfd', () => tsPingPong('ioeventfd')));
    samples.pingMailbox.push(await step(r, 'pingMailbox', () => tsPingPong('mailbox')));
    if (otherBuild) {
      const ours = await step(r, 'this build in a process of its own', () =>
        threadPathsIn(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..')),
      );
      const theirs = await step(r, `${otherBuild} in a process of its own`, () => threadPathsIn(otherBuild));
      samples.ownLocal.push(ours.local);
      samples.ownPosted.push(ours.posted);
      samples.ownRead.push(ours.read);
      samples.otherLocal.push(theirs.local);
      samples.otherPosted.push(theirs.posted);
      samples.otherRead.push(theirs.read);
    }
  }
} finally {
  c.cleanup();
  kvm.close();
}

// The A/B's samples exist only when another build was given.
const m = Object.fromEntries(
  Object.entries(samples)
    .filter(([, v]) => v.length > 0)
    .map(([k, v]) => [k, median(v)]),
) as { [K in keyof typeof samples]: number };
const row = (name: string, us: number, peer: number) => `| ${name} | ${us.toFixed(2)} | ${(us / peer).toFixed(2)}x |`;
console.log(`exit round trip, ${exits} exits per run, median of ${rounds} rounds (µs per exit; ratio against C)\n`);
console.log('| path | µs/exit | vs C |');
console.log('| --- | ---: | ---: |');
console.log(row('C (bench/exit-roundtrip.c, gcc -O2)', m.c, m.c));
console.log(row('ts-vmm, KVM_RUN on the main thread', m.inline, m.c));
console.log(row('ts-vmm, vCPU thread, vCPU-local range', m.local, m.c));
console.log(row('ts-vmm, vCPU thread, device on the main thread: posted write', m.posted, m.c));
console.log(row('ts-vmm, vCPU thread, device on the main thread: read (round trip)', m.read, m.c));
console.log(row('bare ioctl, C (KVM_CHECK_EXTENSION)', m.cIoctl, m.cIoctl));
console.log(row('bare ioctl, ts-vmm via koffi', m.tsIoctl, m.cIoctl));
console.log('\nwatching the exits (--stats: counters and guest/VMM time; --trace pio: also a ring of events), against the same path unwatched\n');
console.log('| path | µs/exit | vs unwatched |');
console.log('| --- | ---: | ---: |');
console.log(row('vCPU-local range, --stats', m.localStats, m.local));
console.log(row('vCPU-local range, --trace pio', m.localTrace, m.local));
console.log(row('posted write, --stats', m.postedStats, m.posted));
console.log(`\nguest notification answered by the device thread, ${Math.max(2, Math.floor(exits / 10))} per run (µs each; ratio against the ioeventfd path)\n`);
console.log('| path | µs/notification | vs ioeventfd |');
console.log('| --- | ---: | ---: |');
console.log(row('ioeventfd (no exit) + eventfd poller (epoll_wait on a libuv pool thread)', m.pingIoeventfd, m.pingIoeventfd));
console.log(row('port write exit + posted mailbox write', m.pingMailbox, m.pingIoeventfd));
if (otherBuild) {
  console.log(`\nthe unwatched vCPU-thread paths, this build and ${otherBuild}, each round in a fresh process of each (ratio: this build against that one)\n`);
  console.log('| path | this build µs/exit | other build µs/exit | this / other |');
  console.log('| --- | ---: | ---: | ---: |');
  const ab = (name: string, ours: number, theirs: number) =>
    console.log(`| ${name} | ${ours.toFixed(2)} | ${theirs.toFixed(2)} | ${(ours / theirs).toFixed(3)} |`);
  ab('vCPU-local range', m.ownLocal, m.otherLocal);
  ab('posted write', m.ownPosted, m.otherPosted);
  ab('read (round trip)', m.ownRead, m.otherRead);
}
