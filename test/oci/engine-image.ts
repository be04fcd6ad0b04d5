// Container images for the real engines, made offline from a busybox rootfs (no registry is reachable in the lab):
// an OCI image layout packed as a tar for `ctr images import`, and a plain rootfs tar for `podman import`.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** `tar -cf out -C dir .` (GNU tar on the host, busybox's in the lab: both take these options). */
export async function tarDirectory(dir: string, out: string): Promise<void> {
  await execFileAsync('tar', ['-cf', out, '-C', dir, '.']);
}

async function blob(layout: string, content: Buffer | string): Promise<{ digest: string; size: number }> {
  const bytes = Buffer.from(content);
  const hex = createHash('sha256').update(bytes).digest('hex');
  await writeFile(join(layout, 'blobs', 'sha256', hex), bytes);
  return { digest: `sha256:${hex}`, size: bytes.length };
}

/**
 * Writes at `out` an OCI image (one uncompressed layer: `rootfs`) named `name` (e.g. docker.io/library/x:tag), as
 * `ctr images import` reads it; `workDir` is scratch space; `cmd` is the image's default command.
 */
export async function writeOciImageTar(rootfs: string, name: string, workDir: string, out: string, cmd = ['/bin/sh']): Promise<void> {
  const layout = join(workDir, 'layout');
  await rm(layout, { recursive: true, force: true });
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  const layerTar = join(workDir, 'layer.tar');
  await tarDirectory(rootfs, layerTar);
  const layer = await blob(layout, await readFile(layerTar));
  await rm(layerTar);
  const config = await blob(
    layout,
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/bin:/usr/bin'], Cmd: cmd },
      rootfs: { type: 'layers', diff_ids: [layer.digest] },
    }),
  );
  const manifest = await blob(
    layout,
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
    }),
  );
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': name.split(':').at(-1) },
        },
      ],
    }),
  );
  await tarDirectory(layout, out);
  await rm(layout, { recursive: true });
}
