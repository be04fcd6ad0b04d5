// How a bundle selects a confidential run, as crun selects libkrun's SEV flavour: the krun-sev handler annotation
// or buildah mkcw's /krun-sev.json, with the image at /disk.img in the rootfs.
import { expect } from 'chai';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readBundleConfig } from '../../src/oci/bundle-config.js';
import { RunError } from '../../src/oci/runner.js';
import { confidentialSelection } from '../../src/oci/run-selection.js';

describe('oci: selecting a confidential run from the bundle', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ts-vmm-select-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  let serial = 0;
  const bundle = (annotations: Record<string, string>, files: string[] = []) => {
    const path = join(dir, `b${serial++}`);
    mkdirSync(join(path, 'rootfs'), { recursive: true });
    for (const f of files) writeFileSync(join(path, 'rootfs', f), '{}');
    writeFileSync(
      join(path, 'config.json'),
      JSON.stringify({ ociVersion: '1.0.2', process: { cwd: '/', args: ['/entrypoint'] }, root: { path: 'rootfs' }, annotations }),
    );
    return readBundleConfig(path);
  };

  it('a plain bundle, or another handler, is a plain run', () => {
    expect(confidentialSelection(bundle({}))).to.equal(undefined);
    expect(confidentialSelection(bundle({ 'run.oci.handler': 'krun' }, ['disk.img']))).to.equal(undefined);
    expect(confidentialSelection(bundle({ 'run.oci.handler': 'krun' }, ['disk.img', 'krun-sev.json'])), 'the annotation decides').to.equal(undefined);
  });

  it("the handler annotation or buildah's /krun-sev.json selects the image at /disk.img, on SEV by default", () => {
    const annotated = bundle({ 'run.oci.handler': 'krun-sev' }, ['disk.img']);
    expect(confidentialSelection(annotated)).to.deep.equal({ image: join(annotated.rootfs, 'disk.img'), options: { tee: 'sev' } });
    const marked = bundle({}, ['disk.img', 'krun-sev.json']);
    expect(confidentialSelection(marked)?.image).to.equal(join(marked.rootfs, 'disk.img'));
  });

  it("a Kubernetes pod's sandbox container runs plain even when the pod's annotation selects krun-sev", () => {
    const markers: Record<string, string>[] = [{ 'io.kubernetes.cri.container-type': 'sandbox' }, { 'io.kubernetes.cri-o.ContainerType': 'sandbox' }];
    for (const marker of markers)
      expect(confidentialSelection(bundle({ 'run.oci.handler': 'krun-sev', ...marker })), JSON.stringify(marker)).to.equal(undefined);
    const workload = bundle({ 'run.oci.handler': 'krun-sev', 'io.kubernetes.cri.container-type': 'container' }, ['disk.img']);
    expect(confidentialSelection(workload)?.image).to.equal(join(workload.rootfs, 'disk.img'));
  });

  it('takes the key broker from libkrun.attestation when it is a URL, and sev-sim with its state from ts-vmm annotations', () => {
    const config = bundle(
      { 'run.oci.handler': 'krun-sev', 'libkrun.attestation': 'https://kbs.example:8000', 'ts-vmm.tee': 'sev-sim', 'ts-vmm.sev-sim-state': '/var/lib/sim' },
      ['disk.img'],
    );
    expect(confidentialSelection(config)?.options).to.deep.equal({ tee: 'sev-sim', simState: '/var/lib/sim', attestationUrl: 'https://kbs.example:8000' });
    expect(confidentialSelection(bundle({ 'run.oci.handler': 'krun-sev', 'libkrun.attestation': 'kbs-name' }, ['disk.img']))?.options).to.deep.equal({
      tee: 'sev',
    });
  });

  it('refuses a krun-sev bundle without /disk.img, and an unknown TEE, by name', () => {
    expect(() => confidentialSelection(bundle({ 'run.oci.handler': 'krun-sev' }))).to.throw(
      RunError,
      /carries its encrypted image as \/disk\.img in the rootfs/,
    );
    expect(() => confidentialSelection(bundle({ 'run.oci.handler': 'krun-sev', 'ts-vmm.tee': 'tdx' }, ['disk.img']))).to.throw(
      RunError,
      /"tdx", not sev or sev-sim/,
    );
  });
});
