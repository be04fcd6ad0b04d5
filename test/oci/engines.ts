// The real container engines as the engine tests and the engine benchmark set them up: the runtime wrapper an
// engine runs, a containerd of its own (its own root, state and socket), podman with its storage in one directory,
// and the offline busybox image each imports.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cliEntry } from '../../src/sys/project-paths.js';
import { tarDirectory, writeOciImageTar } from './engine-image.js';

const execFileAsync = promisify(execFile);

/** What ts-vmm needs from the caller's environment: the engines run the runtime with one of their own. */
const FORWARDED_ENV = ['TS_VMM_AGENT', 'TS_VMM_CACHE', 'TS_VMM_RUN_CACHE', 'HOME'];

/**
 * Writes an executable at `path` that runs ts-vmm (or `program`) with the caller's ts-vmm environment. With
 * `verbLog`, it appends `<start> <end> <exit status> <arguments>` per invocation (seconds of /proc/uptime) to that file.
 */
export function writeRuntimeWrapper(path: string, options: { program?: string; verbLog?: string } = {}): void {
  const env = FORWARDED_ENV.filter((name) => process.env[name] !== undefined).map((name) => `${name}='${process.env[name]}'`);
  const command = options.program ? `'${options.program}'` : `env ${env.join(' ')} '${process.execPath}' '${cliEntry()}'`;
  const script =
    options.verbLog === undefined
      ? `#!/bin/sh\nexec ${command} "$@"\n`
      : `#!/bin/sh\nread t0 _ < /proc/uptime\n${command} "$@"\nrc=$?\nread t1 _ < /proc/uptime\necho "$t0 $t1 $rc $*" >> '${options.verbLog}'\nexit $rc\n`;
  writeFileSync(path, script, { mode: 0o755 });
}

/** The runc shim watches the container's cgroup (v2); the lab mounts none. */
export async function ensureCgroup2(): Promise<void> {
  if (!existsSync('/sys/fs/cgroup/cgroup.controllers')) await execFileAsync('mount', ['-t', 'cgroup2', 'none', '/sys/fs/cgroup']);
}

export interface Containerd {
  process: ChildProcess;
  socket: string;
  root: string;
  state: string;
  /** `ctr` on this containerd, in `namespace`. */
  ctr(namespace: string): string[];
  stop(): Promise<void>;
}

/** Starts containerd with `configToml` under `dir` (root, state, socket, log) and waits until it answers. */
export async function startContainerd(dir: string, name: string, configToml: string): Promise<Containerd> {
  await ensureCgroup2();
  const config = join(dir, `${name}.toml`);
  writeFileSync(config, configToml);
  const socket = join(dir, `${name}.sock`);
  const root = join(dir, `${name}-root`);
  const state = join(dir, `${name}-state`);
  const child = spawn('containerd', ['--config', config, '--root', root, '--state', state, '--address', socket], {
    stdio: ['ignore', 'ignore', openSync(join(dir, `${name}.log`), 'w')],
  });
  const ctr = (namespace: string): string[] => ['ctr', '--address', socket, '--namespace', namespace];
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await execFileAsync('ctr', [...ctr('default').slice(1), 'version']);
      break;
    } catch {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`containerd did not answer within 60 s (log: ${join(dir, `${name}.log`)})`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  return {
    process: child,
    socket,
    root,
    state,
    ctr,
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

/**
 * Imports the rootfs as image `name` into `namespace` of a containerd, with the native snapshotter (it copies
 * layers: the lab's tmpfs root has no overlay module).
 */
export async function importImage(containerd: Containerd, namespace: string, rootfs: string, name: string, workDir: string, cmd?: string[]): Promise<void> {
  const tar = join(workDir, `${name.replace(/[^a-z0-9]+/g, '-')}.tar`);
  await writeOciImageTar(rootfs, name, workDir, tar, cmd);
  await execFileAsync('ctr', [...containerd.ctr(namespace).slice(1), 'images', 'import', '--snapshotter', 'native', tar]);
}

/** podman's global options with all its storage under `dir` (vfs: no overlay module in the lab) and `runtime`. */
export function podmanCommand(dir: string, runtime: string): string[] {
  return [
    'podman',
    '--root',
    join(dir, 'podman-storage'),
    '--runroot',
    join(dir, 'podman-run'),
    '--tmpdir',
    join(dir, 'podman-tmp'),
    '--storage-driver',
    'vfs',
    '--cgroup-manager',
    'cgroupfs',
    '--events-backend',
    'file',
    '--runtime',
    runtime,
  ];
}

/** `podman import` of the rootfs as `image`. */
export async function podmanImport(podman: readonly string[], rootfs: string, image: string, workDir: string): Promise<void> {
  const tar = join(workDir, 'rootfs.tar');
  await tarDirectory(rootfs, tar);
  await execFileAsync(podman[0] ?? 'podman', [...podman.slice(1), 'import', tar, image]);
}
