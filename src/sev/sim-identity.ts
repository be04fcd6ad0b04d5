// The simulated platform's identity: its own ARK and ASK (standing in for AMD's), CEK, OCA, PEK and PDH,
// signed exactly as on a real platform, kept in a state directory so a guest owner can pin the chain
// (chain.cert = PDH || PEK || OCA || CEK || ASK || ARK) and later sessions keep working.
import { createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CaCertificate } from './ca-certificate.js';
import { Usage } from './certificate-key.js';
import { encodeCaChain, encodeSevChain, type FullChain } from './chain.js';
import { SevCertificate } from './sev-certificate.js';
import { writeKeyFile } from './owner-files.js';
import { errorMessage } from '../sys/error-message.js';

export interface IdentityOptions {
  /** ARK/ASK key size: 4096 (Rome and later, SHA-384) or 2048 (Naples, SHA-256). */
  caBits?: 2048 | 4096;
  apiMajor?: number;
  apiMinor?: number;
}

type Name = 'ark' | 'ask' | 'cek' | 'oca' | 'pek' | 'pdh';
const names: readonly Name[] = ['ark', 'ask', 'cek', 'oca', 'pek', 'pdh'];

export class SimulatedIdentity {
  private constructor(
    readonly chain: FullChain,
    readonly keys: Readonly<Record<Name, KeyObject>>,
    /** GET_ID2's answer: 64 bytes unique to this simulated chip. */
    readonly chipId: Uint8Array,
  ) {}

  static generate(options: IdentityOptions = {}): SimulatedIdentity {
    const caBits = options.caBits ?? 4096;
    const api = { apiMajor: options.apiMajor ?? 0, apiMinor: options.apiMinor ?? 24 };
    const rsa = () => generateKeyPairSync('rsa', { modulusLength: caBits });
    const ec = () => generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    const [arkPair, askPair] = [rsa(), rsa()];
    const [cekPair, ocaPair, pekPair, pdhPair] = [ec(), ec(), ec(), ec()];
    const arkId = randomBytes(16);
    const askId = randomBytes(16);
    const ark = CaCertificate.create({
      usage: Usage.ARK,
      keyId: arkId,
      publicKey: arkPair.publicKey,
      signer: { keyId: arkId, privateKey: arkPair.privateKey },
    });
    const ask = CaCertificate.create({
      usage: Usage.ASK,
      keyId: askId,
      publicKey: askPair.publicKey,
      signer: { keyId: arkId, privateKey: arkPair.privateKey },
    });
    const caHash = caBits === 2048 ? 'sha256' : 'sha384';

    const cek = SevCertificate.create({ usage: Usage.CEK, publicKey: cekPair.publicKey, ...api });
    cek.sign({ usage: Usage.ASK, kind: 'rsa', hash: caHash, privateKey: askPair.privateKey });
    const oca = SevCertificate.create({ usage: Usage.OCA, publicKey: ocaPair.publicKey, ...api });
    oca.sign({ usage: Usage.OCA, kind: 'ecdsa', hash: 'sha256', privateKey: ocaPair.privateKey });
    const pek = SevCertificate.create({ usage: Usage.PEK, publicKey: pekPair.publicKey, ...api });
    pek.sign({ usage: Usage.OCA, kind: 'ecdsa', hash: 'sha256', privateKey: ocaPair.privateKey });
    pek.sign({ usage: Usage.CEK, kind: 'ecdsa', hash: 'sha256', privateKey: cekPair.privateKey });
    const pdh = SevCertificate.create({ usage: Usage.PDH, publicKey: pdhPair.publicKey, ...api });
    pdh.sign({ usage: Usage.PEK, kind: 'ecdsa', hash: 'sha256', privateKey: pekPair.privateKey });

    return new SimulatedIdentity(
      { ark, ask, cek, oca, pek, pdh },
      { ark: arkPair.privateKey, ask: askPair.privateKey, cek: cekPair.privateKey, oca: ocaPair.privateKey, pek: pekPair.privateKey, pdh: pdhPair.privateKey },
      randomBytes(64),
    );
  }

  /** Loads the identity kept in `dir`, or creates and saves one there. */
  static loadOrCreate(dir: string, options: IdentityOptions = {}): SimulatedIdentity {
    if (existsSync(path.join(dir, 'pdh.cert'))) return SimulatedIdentity.load(dir);
    const identity = SimulatedIdentity.generate(options);
    identity.save(dir);
    return identity;
  }

  static load(dir: string): SimulatedIdentity {
    const read = (file: string) => {
      try {
        return readFileSync(path.join(dir, file));
      } catch (e) {
        throw new Error(`sev-sim state ${dir}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? errorMessage(e)})`);
      }
    };
    // A corrupt file is named: OpenSSL's own message says what failed, never in which file.
    const parse = <T>(file: string, decode: (bytes: Buffer) => T): T => {
      const bytes = read(file);
      try {
        return decode(bytes);
      } catch (e) {
        throw new Error(`sev-sim state ${dir}: ${file} is corrupt (${errorMessage(e)})`);
      }
    };
    const keys = Object.fromEntries(names.map((n) => [n, parse(`${n}.key`, (pem) => createPrivateKey(pem))])) as Record<Name, KeyObject>;
    const chain: FullChain = {
      ark: parse('ark.cert', (b) => CaCertificate.parse(b, 'ARK')),
      ask: parse('ask.cert', (b) => CaCertificate.parse(b, 'ASK')),
      cek: parse('cek.cert', (b) => SevCertificate.parse(b, 'CEK')),
      oca: parse('oca.cert', (b) => SevCertificate.parse(b, 'OCA')),
      pek: parse('pek.cert', (b) => SevCertificate.parse(b, 'PEK')),
      pdh: parse('pdh.cert', (b) => SevCertificate.parse(b, 'PDH')),
    };
    return new SimulatedIdentity(chain, keys, read('id.bin'));
  }

  save(dir: string): void {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const n of names) {
      writeFileSync(path.join(dir, `${n}.cert`), this.chain[n].bytes);
      writeKeyFile(path.join(dir, `${n}.key`), this.keys[n].export({ type: 'pkcs8', format: 'pem' }));
    }
    writeFileSync(path.join(dir, 'id.bin'), this.chipId);
    writeFileSync(path.join(dir, 'chain.cert'), Buffer.concat([encodeSevChain(this.chain), encodeCaChain(this.chain)]));
  }
}
