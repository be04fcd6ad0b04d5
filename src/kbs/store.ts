// The key broker's durable store: one file per workload in DIR/workloads/, named by the SHA-256 of the workload
// id, holding its launch digest, policy and passphrase (mode 0600, since the passphrase is the secret).
// A registration is acknowledged only once it is on disk: the record is written to a fresh temporary file,
// fsync'ed, renamed over the old one and the directory fsync'ed, so after a crash (kill -9, power loss) each
// workload is either its old record or its new one, never a torn mix. Concurrent registrations each write
// their own temporary file; the last rename wins, as reference-kbs's REPLACE does.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, fsyncSync, mkdirSync, openSync, readdirSync, unlinkSync } from 'node:fs';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Registration } from './wire.js';

const TEMP_SUFFIX = '.tmp';

interface WorkloadFile {
  workload_id: string;
  launch_digest: string;
  policy: number;
  passphrase: string;
}

function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export class WorkloadStore {
  private readonly dir: string;

  /** Opens (creating) the store; temporary files of registrations that never finished are removed. */
  constructor(root: string) {
    this.dir = path.join(root, 'workloads');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    for (const name of readdirSync(this.dir)) {
      if (name.endsWith(TEMP_SUFFIX)) unlinkSync(path.join(this.dir, name));
    }
    fsyncDirectory(this.dir);
  }

  private fileOf(workloadId: string): string {
    return path.join(this.dir, `${createHash('sha256').update(workloadId).digest('hex')}.json`);
  }

  /** Resolves once the registration is durable. */
  async put(r: Registration): Promise<void> {
    const record: WorkloadFile = { workload_id: r.workloadId, launch_digest: r.launchDigest.toString('hex'), policy: r.policy, passphrase: r.passphrase };
    const target = this.fileOf(r.workloadId);
    const temp = `${target}.${randomBytes(8).toString('hex')}${TEMP_SUFFIX}`;
    const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      await handle.writeFile(JSON.stringify(record));
      await handle.sync();
    } catch (e) {
      await handle.close();
      await unlink(temp).catch(() => undefined);
      throw e;
    }
    await handle.close();
    await rename(temp, target);
    const dir = await open(this.dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  async get(workloadId: string): Promise<Registration | undefined> {
    let text: string;
    try {
      text = await readFile(this.fileOf(workloadId), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    const record = JSON.parse(text) as WorkloadFile;
    // A hash collision is not a concern; a record renamed in by hand under another id is.
    if (record.workload_id !== workloadId) return undefined;
    return { workloadId, launchDigest: Buffer.from(record.launch_digest, 'hex'), policy: record.policy, passphrase: record.passphrase };
  }
}
