// The key broker over HTTPS: the client pins the broker's CA (`--kbs-ca`); without it the connection is refused
// before anything is sent. The certificate is made by openssl (skipped where there is none).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AuditLog } from '../../src/kbs/audit.js';
import { Broker, tokenDigest } from '../../src/kbs/broker.js';
import { KbsClient, KbsClientError } from '../../src/kbs/client.js';
import { createKbsServer } from '../../src/kbs/server.js';
import { WorkloadStore } from '../../src/kbs/store.js';
import { TrustStore, loadTrustAnchor } from '../../src/kbs/trust.js';
import { SimulatedIdentity } from '../../src/sev/sim-identity.js';

describe('kbs: HTTPS with a pinned CA', () => {
  it('registers over TLS with --kbs-ca; an unpinned self-signed broker is a connection failure', async function () {
    const dir = mkdtempSync(path.join(tmpdir(), 'ts-vmm-kbs-tls-'));
    try {
      const cert = path.join(dir, 'cert.pem');
      const key = path.join(dir, 'key.pem');
      const made = spawnSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-days',
          '1',
          '-subj',
          '/CN=kbs',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
          '-keyout',
          key,
          '-out',
          cert,
        ],
        { encoding: 'utf8' },
      );
      if (made.error || made.status !== 0) this.skip();
      SimulatedIdentity.generate({ caBits: 2048 }).save(path.join(dir, 'sim'));
      const audit = new AuditLog(path.join(dir, 'audit.log'), true);
      const store = new WorkloadStore(path.join(dir, 'store'));
      const broker = new Broker({ store, trust: new TrustStore([loadTrustAnchor(path.join(dir, 'sim'))]), audit, adminTokenDigest: tokenDigest('t') });
      const server = createKbsServer({ broker, tls: { cert: readFileSync(cert), key: readFileSync(key) } });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const r = { workloadId: 'w', launchDigest: Buffer.alloc(32), policy: 1, passphrase: 'p' };
      try {
        await new KbsClient({ url, ca: readFileSync(cert) }).register('t', r);
        expect((await store.get('w'))?.passphrase).to.equal('p');
        try {
          await new KbsClient({ url }).register('t', { ...r, passphrase: 'q' });
          expect.fail('an unpinned self-signed broker was trusted');
        } catch (e) {
          expect(e).to.be.instanceOf(KbsClientError);
          expect([(e as KbsClientError).step, (e as KbsClientError).status, (e as KbsClientError).reason]).to.deep.equal(['register', undefined, 'connection']);
        }
        expect((await store.get('w'))?.passphrase).to.equal('p');
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
        audit.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
