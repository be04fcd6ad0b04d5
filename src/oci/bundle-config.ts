// Reads an OCI runtime bundle's config.json (runtime-spec 1.x) into the subset a micro-VM can honour.
// Every field either maps to something the guest does, is reported as a warning (its job is done by the VM
// boundary itself), or is refused with an error naming it: nothing is dropped silently.
import { MAX_CPUS } from '../boot/acpi/tables.js';
import { maxGuestMemoryMiB, MIN_GUEST_MEMORY_MIB } from '../boot/layout.js';
import { readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { errorMessage } from '../sys/error-message.js';
import { mountCall } from './mount-options.js';

/** A bundle that cannot be run as given; the message names the file and the problem. */
export class BundleError extends Error {
  override readonly name = 'BundleError';
}

export interface GuestMount {
  destination: string;
  /** `bind`: a host file (source, a host path) copied into the guest when the VM is made, and bound there. */
  type: 'proc' | 'sysfs' | 'tmpfs' | 'devpts' | 'mqueue' | 'cgroup2' | 'devtmpfs' | 'bind';
  source: string;
  options: string[];
}

export interface ResourceLimit {
  type: string;
  soft: number;
  hard: number;
}

export interface ProcessSpec {
  args: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids: number[];
  umask: number | undefined;
  terminal: boolean;
  noNewPrivileges: boolean;
  rlimits: ResourceLimit[];
}

export interface VmSizing {
  cpus: number;
  memoryMiB: number;
}

export interface BundleConfig {
  /** Absolute path of the bundle directory. */
  bundle: string;
  configPath: string;
  ociVersion: string;
  /** Absolute path of the root filesystem on the host. */
  rootfs: string;
  readonlyRoot: boolean;
  hostname: string | undefined;
  process: ProcessSpec;
  mounts: GuestMount[];
  annotations: Record<string, string>;
  vm: VmSizing;
  /** Fields present in config.json that the VM ignores, each with the reason. */
  warnings: string[];
}

export const DEFAULT_CPUS = 1;
export const DEFAULT_MEMORY_MIB = 256;

/** Annotation names for VM sizing; libkrun's krun names are accepted so bundles written for krun run unchanged. */
export const CPUS_ANNOTATIONS = ['ts-vmm.cpus', 'krun.cpus'] as const;
export const MEMORY_ANNOTATIONS = ['ts-vmm.memory-mib', 'krun.ram_mib'] as const;

/**
 * What the guest's kernel and agent take, checked here so that a bundle beyond them is refused on the host with
 * the limit named, rather than failing in the guest. execve(2) (fs/exec.c): one argument or environment string of
 * at most MAX_ARG_STRLEN bytes with its NUL, and all of them with their pointers within a quarter of the soft
 * RLIMIT_STACK, capped at 3/4 of _STK_LIM (8 MiB) and never below ARG_MAX (128 KiB).
 */
export const GUEST_LIMITS = {
  argStrlen: 32 * 4096,
  stackDefault: 8 * 1024 * 1024,
  argMaxFloor: 128 * 1024,
  argMaxCeiling: 6 * 1024 * 1024,
  pointerBytes: 8,
  /** setgroups(2): NGROUPS_MAX supplementary groups. */
  groups: 65536,
  /** The mounts the agent makes (MAX_MOUNTS in agent.c). */
  mounts: 64,
  /** PATH_MAX, with the NUL. */
  path: 4096,
  /** mount(2) copies at most one page of data. */
  mountData: 4096,
} as const;

/** The most execve(2) takes of arguments and environment (strings, NULs and pointers) under this RLIMIT_STACK. */
export function execveLimit(stackSoft: number = GUEST_LIMITS.stackDefault): number {
  return Math.max(Math.min(Math.floor(stackSoft / 4), GUEST_LIMITS.argMaxCeiling), GUEST_LIMITS.argMaxFloor);
}

const SUPPORTED_MOUNT_TYPES = new Set(['proc', 'sysfs', 'tmpfs', 'devpts', 'mqueue', 'cgroup2', 'devtmpfs']);

/** runtime-spec's POSIX rlimit names the guest agent knows how to apply. */
export const RLIMIT_NAMES = [
  'RLIMIT_AS',
  'RLIMIT_CORE',
  'RLIMIT_CPU',
  'RLIMIT_DATA',
  'RLIMIT_FSIZE',
  'RLIMIT_LOCKS',
  'RLIMIT_MEMLOCK',
  'RLIMIT_MSGQUEUE',
  'RLIMIT_NICE',
  'RLIMIT_NOFILE',
  'RLIMIT_NPROC',
  'RLIMIT_RSS',
  'RLIMIT_RTPRIO',
  'RLIMIT_RTTIME',
  'RLIMIT_SIGPENDING',
  'RLIMIT_STACK',
] as const;

/** Fields whose purpose the VM boundary already serves; present -> warning, not error. */
const VM_PROVIDED = new Map<string, string>([
  ['process.capabilities', 'the workload runs with the capabilities of its uid inside its own kernel'],
  ['process.apparmorProfile', 'the guest kernel has no AppArmor policy; the VM is the isolation boundary'],
  ['process.selinuxLabel', 'the guest kernel has no SELinux policy; the VM is the isolation boundary'],
  ['process.oomScoreAdj', 'the VM has its own memory; the host OOM score of the VMM is not changed'],
  ['process.consoleSize', 'the terminal size is taken from the host terminal'],
  ['linux.namespaces', 'the VM is the isolation boundary'],
  ['linux.seccomp', 'the VM is the isolation boundary'],
  ['linux.maskedPaths', 'the guest kernel belongs to the workload alone'],
  ['linux.readonlyPaths', 'the guest kernel belongs to the workload alone'],
  ['linux.resources', 'the VM is sized by annotations (ts-vmm.cpus, ts-vmm.memory-mib)'],
  ['linux.cgroupsPath', 'the VM is sized by annotations (ts-vmm.cpus, ts-vmm.memory-mib)'],
  ['linux.devices', 'the guest has its own device set'],
  ['linux.sysctl', 'not applied inside the guest'],
  ['linux.uidMappings', 'the guest kernel has its own user ids'],
  ['linux.gidMappings', 'the guest kernel has its own group ids'],
  ['linux.rootfsPropagation', 'the rootfs is a disk, not a host mount'],
  ['linux.mountLabel', 'the guest kernel has no SELinux policy'],
  ['linux.personality', 'not applied inside the guest'],
  ['linux.intelRdt', 'not applied inside the guest'],
  ['linux.timeOffsets', 'not applied inside the guest'],
]);

/** Fields that would change what the workload sees or what runs on the host, and that cannot be honoured. */
const REFUSED = new Map<string, string>([
  ['hooks', 'hooks run host programs around the container and are not supported'],
  ['process.user.username', 'only numeric uid/gid are supported'],
  ['process.ioPriority', 'I/O priority is not supported'],
  ['process.scheduler', 'scheduler settings are not supported'],
  ['process.execCPUAffinity', 'CPU affinity is not supported'],
  ['process.commandLine', 'process.commandLine is Windows-only'],
  ['windows', 'Windows containers are not supported'],
  ['solaris', 'Solaris containers are not supported'],
  ['vm', 'the runtime-spec "vm" section is not supported; ts-vmm chooses the kernel'],
  ['zos', 'z/OS containers are not supported'],
]);

const KNOWN_TOP = new Set([
  'ociVersion',
  'process',
  'root',
  'hostname',
  'domainname',
  'mounts',
  'annotations',
  'linux',
  'hooks',
  'windows',
  'solaris',
  'vm',
  'zos',
  'freebsd',
]);
const KNOWN_PROCESS = new Set([
  'terminal',
  'consoleSize',
  'cwd',
  'env',
  'args',
  'commandLine',
  'rlimits',
  'apparmorProfile',
  'capabilities',
  'noNewPrivileges',
  'oomScoreAdj',
  'scheduler',
  'selinuxLabel',
  'ioPriority',
  'execCPUAffinity',
  'user',
]);
const KNOWN_USER = new Set(['uid', 'gid', 'umask', 'additionalGids', 'username']);
const KNOWN_LINUX = new Set([
  'namespaces',
  'uidMappings',
  'gidMappings',
  'timeOffsets',
  'devices',
  'cgroupsPath',
  'rootfsPropagation',
  'resources',
  'unified',
  'sysctl',
  'seccomp',
  'maskedPaths',
  'readonlyPaths',
  'mountLabel',
  'personality',
  'intelRdt',
  'memoryPolicy',
  'netDevices',
]);

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class Reader {
  readonly warnings: string[] = [];
  constructor(private readonly file: string) {}

  fail(field: string, problem: string): never {
    throw new BundleError(`${this.file}: ${field}: ${problem}`);
  }

  object(v: unknown, field: string): Json {
    if (!isObject(v)) this.fail(field, 'must be an object');
    return v;
  }

  string(v: unknown, field: string): string {
    if (typeof v !== 'string') this.fail(field, 'must be a string');
    return v;
  }

  stringArray(v: unknown, field: string): string[] {
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) this.fail(field, 'must be an array of strings');
    return v as string[];
  }

  boolean(v: unknown, field: string, fallback: boolean): boolean {
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') this.fail(field, 'must be true or false');
    return v;
  }

  uint32(v: unknown, field: string): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      this.fail(field, 'must be an integer from 0 to 4294967295');
    }
    return v;
  }

  /** Splits present fields of `obj` into known ones and warns or fails for the rest by the tables above. */
  screen(obj: Json, prefix: string, known: Set<string>): void {
    for (const key of Object.keys(obj)) {
      const field = prefix ? `${prefix}.${key}` : key;
      const refused = REFUSED.get(field);
      if (refused) this.fail(field, refused);
      const ignored = VM_PROVIDED.get(field);
      if (ignored) {
        this.warnings.push(`${field} ignored: ${ignored}`);
        continue;
      }
      if (!known.has(key)) this.warnings.push(`${field} ignored: not a runtime-spec field ts-vmm knows`);
    }
  }
}

function noNul(r: Reader, s: string, field: string): string {
  if (s.includes('\0')) r.fail(field, 'contains a NUL byte');
  return s;
}

function readProcess(r: Reader, raw: unknown): ProcessSpec {
  const p = r.object(raw, 'process');
  r.screen(p, 'process', KNOWN_PROCESS);
  const args = r.stringArray(p.args, 'process.args').map((a, i) => noNul(r, a, `process.args[${i}]`));
  if (args.length === 0 || args[0] === '') r.fail('process.args', 'must name the program to run');
  const env = p.env === undefined ? [] : r.stringArray(p.env, 'process.env');
  env.forEach((e, i) => {
    noNul(r, e, `process.env[${i}]`);
    if (e.indexOf('=') <= 0) r.fail(`process.env[${i}]`, `"${e}" is not NAME=value`);
  });
  const cwd = r.string(p.cwd, 'process.cwd');
  if (!cwd.startsWith('/')) r.fail('process.cwd', `"${cwd}" must be an absolute path`);
  noNul(r, cwd, 'process.cwd');
  const user = r.object(p.user ?? { uid: 0, gid: 0 }, 'process.user');
  r.screen(user, 'process.user', KNOWN_USER);
  const additionalGids =
    user.additionalGids === undefined
      ? []
      : (() => {
          if (!Array.isArray(user.additionalGids)) r.fail('process.user.additionalGids', 'must be an array');
          return user.additionalGids.map((g, i) => r.uint32(g, `process.user.additionalGids[${i}]`));
        })();
  const umask = user.umask === undefined ? undefined : r.uint32(user.umask, 'process.user.umask');
  if (umask !== undefined && umask > 0o777) r.fail('process.user.umask', 'must be at most 0777');
  if (additionalGids.length > GUEST_LIMITS.groups) {
    r.fail('process.user.additionalGids', `${additionalGids.length} groups are more than setgroups(2) takes (NGROUPS_MAX, ${GUEST_LIMITS.groups})`);
  }
  const terminal = r.boolean(p.terminal, 'process.terminal', false);
  const noNewPrivileges = r.boolean(p.noNewPrivileges, 'process.noNewPrivileges', false);
  const rlimits = readRlimits(r, p.rlimits);
  checkExecveLimits(r, args, env, rlimits);
  return {
    args,
    env,
    cwd,
    uid: r.uint32(user.uid, 'process.user.uid'),
    gid: r.uint32(user.gid, 'process.user.gid'),
    additionalGids,
    umask,
    terminal,
    noNewPrivileges,
    rlimits,
  };
}

function checkExecveLimits(r: Reader, args: string[], env: string[], rlimits: ResourceLimit[]): void {
  let total = 0;
  for (const [field, strings] of [
    ['process.args', args],
    ['process.env', env],
  ] as const) {
    strings.forEach((s, i) => {
      const bytes = Buffer.byteLength(s, 'utf8') + 1;
      if (bytes > GUEST_LIMITS.argStrlen) {
        r.fail(`${field}[${i}]`, `${bytes} bytes (with its NUL) is more than execve(2) takes in one string (MAX_ARG_STRLEN, ${GUEST_LIMITS.argStrlen} bytes)`);
      }
      total += bytes + GUEST_LIMITS.pointerBytes;
    });
  }
  const stack = rlimits.findLast((l) => l.type === 'RLIMIT_STACK')?.soft;
  const limit = execveLimit(stack);
  if (total > limit) {
    r.fail(
      'process.args and process.env',
      `${total} bytes (strings, NULs and pointers) are more than the ${limit} bytes execve(2) takes ` +
        `with RLIMIT_STACK ${stack ?? GUEST_LIMITS.stackDefault} (a quarter of it, at most ${GUEST_LIMITS.argMaxCeiling})`,
    );
  }
}

function readRlimits(r: Reader, raw: unknown): ResourceLimit[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) r.fail('process.rlimits', 'must be an array');
  return raw.map((item, i) => {
    const field = `process.rlimits[${i}]`;
    const o = r.object(item, field);
    const type = r.string(o.type, `${field}.type`);
    if (!(RLIMIT_NAMES as readonly string[]).includes(type)) r.fail(`${field}.type`, `unknown limit "${type}"`);
    const limit = (v: unknown, name: string): number => {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) r.fail(`${field}.${name}`, 'must be a non-negative integer');
      return v;
    };
    const soft = limit(o.soft, 'soft');
    const hard = limit(o.hard, 'hard');
    if (soft > hard) r.fail(field, `soft limit ${soft} exceeds hard limit ${hard}`);
    return { type, soft, hard };
  });
}

function readMounts(r: Reader, raw: unknown): GuestMount[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) r.fail('mounts', 'must be an array');
  const mounts: GuestMount[] = [];
  raw.forEach((item, i) => {
    const field = `mounts[${i}]`;
    const m = r.object(item, field);
    const destination = noNul(r, r.string(m.destination, `${field}.destination`), `${field}.destination`);
    if (!destination.startsWith('/')) r.fail(`${field}.destination`, `"${destination}" must be an absolute path`);
    if (destination.split('/').includes('..')) r.fail(`${field}.destination`, `"${destination}" must not contain ".."`);
    const options = m.options === undefined ? [] : r.stringArray(m.options, `${field}.options`);
    const type = m.type === undefined ? (options.includes('bind') || options.includes('rbind') ? 'bind' : '') : r.string(m.type, `${field}.type`);
    const source = m.source === undefined ? type : r.string(m.source, `${field}.source`);
    if (type === 'bind' || options.includes('bind') || options.includes('rbind')) {
      const flags = mountFlags(options.filter((o) => o !== 'bind' && o !== 'rbind'));
      // What engines bind in: /dev/shm becomes the guest's own; a host file (hosts, resolv.conf, hostname,
      // .containerenv) is copied, as Kata does without a shared filesystem; a host directory cannot be.
      if (destination === '/dev/shm') mounts.push({ destination, type: 'tmpfs', source: 'shm', options: [...flags, 'mode=1777'] });
      else mounts.push({ destination, type: 'bind', source: hostFileToCopy(r, source, `${field} (${destination})`), options: flags });
      return;
    }
    if (type === 'cgroup') {
      r.warnings.push(`${field} (${destination}): cgroup v1 is not available; mounted as cgroup2`);
      mounts.push({ destination, type: 'cgroup2', source: 'cgroup2', options: mountFlags(options) });
      return;
    }
    if (!SUPPORTED_MOUNT_TYPES.has(type)) {
      r.fail(`${field} (${destination})`, `mount type "${type}" is not supported (supported: ${[...SUPPORTED_MOUNT_TYPES].join(', ')})`);
    }
    for (const o of options) noNul(r, o, `${field}.options`);
    mounts.push({ destination, type: type as GuestMount['type'], source, options: mountFlags(options) });
  });
  if (mounts.length > GUEST_LIMITS.mounts) r.fail('mounts', `${mounts.length} mounts are more than the guest agent makes (${GUEST_LIMITS.mounts})`);
  mounts.forEach((m, i) => {
    for (const [name, value] of [
      ['destination', m.destination],
      ['source', m.source],
    ] as const) {
      noNul(r, value, `mounts[${i}].${name}`);
      const bytes = Buffer.byteLength(value, 'utf8') + 1;
      if (bytes > GUEST_LIMITS.path) r.fail(`mounts[${i}].${name}`, `${bytes} bytes (with its NUL) is more than PATH_MAX (${GUEST_LIMITS.path})`);
    }
    const data = Buffer.byteLength(mountCall(m.options).data, 'utf8') + 1;
    if (data > GUEST_LIMITS.mountData)
      r.fail(`mounts[${i}].options`, `${data} bytes of mount data are more than mount(2) takes (one page, ${GUEST_LIMITS.mountData} bytes)`);
  });
  return mounts;
}

/** The most a bind-mounted host file may hold: it is copied into the guest's initramfs. */
export const MAX_COPIED_FILE_BYTES = 1024 * 1024;

function hostFileToCopy(r: Reader, source: string, field: string): string {
  if (!isAbsolute(source)) r.fail(field, `bind source "${source}" must be an absolute path`);
  let stat: ReturnType<typeof statSync>;
  try {
    stat = statSync(source);
  } catch (e) {
    r.fail(field, `bind source ${source}: ${errorMessage(e)}`);
  }
  if (stat.isDirectory()) r.fail(field, 'bind mounts of host directories need a shared filesystem, which ts-vmm does not provide (host files are copied)');
  if (!stat.isFile()) r.fail(field, `bind source ${source} is neither a regular file nor a directory`);
  if (stat.size > MAX_COPIED_FILE_BYTES)
    r.fail(field, `bind source ${source} is ${stat.size} bytes; host files are copied into the guest, at most ${MAX_COPIED_FILE_BYTES}`);
  return source;
}

/** Propagation flags describe host mount namespaces; inside the guest they mean nothing, so they are filtered. */
const PROPAGATION = new Set(['private', 'rprivate', 'shared', 'rshared', 'slave', 'rslave', 'unbindable', 'runbindable']);
function mountFlags(options: string[]): string[] {
  return options.filter((o) => !PROPAGATION.has(o));
}

function positiveAnnotation(r: Reader, annotations: Record<string, string>, names: readonly string[], fallback: number): number {
  const present = names.filter((n) => annotations[n] !== undefined);
  if (present.length === 0) return fallback;
  const values = present.map((n) => {
    const text = annotations[n]!;
    if (!/^[1-9][0-9]*$/.test(text)) r.fail(`annotations["${n}"]`, `"${text}" is not a positive integer`);
    return Number(text);
  });
  if (new Set(values).size > 1) r.fail('annotations', `${present.join(' and ')} disagree`);
  return values[0]!;
}

function readAnnotations(r: Reader, raw: unknown): Record<string, string> {
  if (raw === undefined) return {};
  const a = r.object(raw, 'annotations');
  for (const [k, v] of Object.entries(a)) r.string(v, `annotations["${k}"]`);
  return a as Record<string, string>;
}

/** Parses config.json text; `bundle` is the absolute bundle directory root.path is relative to. */
export function parseBundleConfig(text: string, bundle: string, configPath = join(bundle, 'config.json')): BundleConfig {
  const json = parseJson(text, configPath);
  const r = new Reader(configPath);
  const top = r.object(json, '(top level)');
  r.screen(top, '', KNOWN_TOP);
  const ociVersion = r.string(top.ociVersion, 'ociVersion');
  if (!/^1\.\d+\.\d+/.test(ociVersion)) r.fail('ociVersion', `"${ociVersion}" is not a runtime-spec 1.x version`);
  const root = r.object(top.root, 'root');
  const rootPath = r.string(root.path, 'root.path');
  if (rootPath === '') r.fail('root.path', 'must not be empty');
  const readonlyRoot = r.boolean(root.readonly, 'root.readonly', false);
  const hostname = top.hostname === undefined ? undefined : r.string(top.hostname, 'hostname');
  if (hostname !== undefined && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/.test(hostname)) {
    r.fail('hostname', `"${hostname}" is not a valid host name`);
  }
  if (top.domainname !== undefined) r.warnings.push('domainname ignored: the guest has no NIS domain');
  if (top.linux !== undefined) r.screen(r.object(top.linux, 'linux'), 'linux', KNOWN_LINUX);
  const process = readProcess(r, top.process);
  const mounts = readMounts(r, top.mounts);
  const annotations = readAnnotations(r, top.annotations);
  const cpus = positiveAnnotation(r, annotations, CPUS_ANNOTATIONS, DEFAULT_CPUS);
  if (cpus > MAX_CPUS) r.fail(`annotations["${CPUS_ANNOTATIONS[0]}"]`, `${cpus} vCPUs is more than the ${MAX_CPUS} supported`);
  const memoryMiB = positiveAnnotation(r, annotations, MEMORY_ANNOTATIONS, DEFAULT_MEMORY_MIB);
  if (memoryMiB < MIN_GUEST_MEMORY_MIB) {
    r.fail(`annotations["${MEMORY_ANNOTATIONS[0]}"]`, `${memoryMiB} MiB is too little memory (at least ${MIN_GUEST_MEMORY_MIB} MiB)`);
  } else if (memoryMiB > maxGuestMemoryMiB()) {
    r.fail(`annotations["${MEMORY_ANNOTATIONS[0]}"]`, `${memoryMiB} MiB is more memory than the ${maxGuestMemoryMiB()} MiB supported`);
  }
  return {
    bundle,
    configPath,
    ociVersion,
    rootfs: isAbsolute(rootPath) ? rootPath : resolve(bundle, rootPath),
    readonlyRoot,
    hostname,
    process,
    mounts,
    annotations,
    vm: { cpus, memoryMiB },
    warnings: r.warnings,
  };
}

/** Parses a process description on its own (runc exec --process FILE): the same object as config.json's process. */
export function parseProcessSpec(text: string, path: string): { process: ProcessSpec; warnings: string[] } {
  const r = new Reader(path);
  return { process: readProcess(r, parseJson(text, path)), warnings: r.warnings };
}

function parseJson(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new BundleError(`${path}: not valid JSON: ${errorMessage(e)}`);
  }
}

/** Reads `<bundle>/config.json` and checks that the root filesystem it names is a directory. */
export function readBundleConfig(bundleDir: string): BundleConfig {
  const bundle = resolve(bundleDir);
  const configPath = join(bundle, 'config.json');
  let text: string;
  try {
    text = readFileSync(configPath, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file (is this an OCI bundle directory?)' : errorMessage(e);
    throw new BundleError(`${configPath}: ${why}`);
  }
  const config = parseBundleConfig(text, bundle, configPath);
  let isDir = false;
  try {
    isDir = statSync(config.rootfs).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) throw new BundleError(`${config.rootfs}: root filesystem (root.path in ${configPath}) is not a directory`);
  return config;
}
