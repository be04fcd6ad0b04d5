// A minimal root filesystem made of Debian's static busybox: enough for shell-script workloads, and the rootfs
// of examples/hello. Generated rather than committed, because it is a Debian binary plus links to it.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Writes a busybox rootfs at `dest` (replacing what is there), plus `files` (guest path -> content, mode). */
export async function writeBusyboxRootfs(busybox: string, dest: string, files: Record<string, { content: string; mode: number }> = {}): Promise<void> {
  const partial = `${dest}.${process.pid}.partial`;
  await rm(partial, { recursive: true, force: true });
  for (const dir of ['bin', 'etc', 'proc', 'sys', 'dev', 'root', 'tmp', 'usr/bin', 'var']) await mkdir(join(partial, dir), { recursive: true });
  await copyFile(busybox, join(partial, 'bin/busybox'));
  // The applet list comes from this very binary, so every link it makes is one it can serve.
  const { stdout } = await execFileAsync(join(partial, 'bin/busybox'), ['--list']);
  for (const applet of stdout.split('\n').filter((a) => /^[a-z0-9._[-]+$/.test(a) && a !== 'busybox')) {
    await symlink('busybox', join(partial, 'bin', applet));
  }
  await writeFile(join(partial, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  await writeFile(join(partial, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  await writeFile(join(partial, 'etc/hosts'), '127.0.0.1 localhost\n');
  for (const [path, file] of Object.entries(files)) {
    await mkdir(join(partial, path, '..'), { recursive: true });
    await writeFile(join(partial, path), file.content);
    await chmod(join(partial, path), file.mode);
  }
  await chmod(join(partial, 'tmp'), 0o1777);
  if (existsSync(dest)) await rm(dest, { recursive: true });
  await rename(partial, dest);
}
