// The AMD Secure Processor's platform commands through /dev/sev (SEV_ISSUE_CMD). Length queries follow the
// kernel's protocol: issue the command with no buffer, read the length back (the firmware answers
// INVALID_LEN), then issue it again with a buffer of that size.
import { decodeExact, encodeExact, type StructDecl } from '../sys/abi.js';
import { O_RDWR, SysError, close, ioctlRaw, open } from '../sys/sys.js';
import type { PlatformStatus, SevPlatform } from './firmware.js';
import { platformStateName } from './firmware.js';
import { KernelBuffers } from './kernel-buffers.js';
import {
  SEV_ISSUE_CMD,
  SevPlatformCommand,
  sevIssueCmd,
  sevUserDataGetId2,
  sevUserDataPdhCertExport,
  sevUserDataPekCsr,
  sevUserDataStatus,
} from './sev-abi.js';
import { SevCertificate } from './sev-certificate.js';
import { SevFirmwareError, SevStatus } from './status.js';

export class SevDevice implements SevPlatform {
  private readonly buffers = new KernelBuffers();

  private constructor(
    readonly fd: number,
    readonly path: string,
  ) {}

  static open(path = '/dev/sev'): SevDevice {
    return new SevDevice(
      open(path, O_RDWR, {
        ENOENT: `${path} does not exist: no SEV-capable AMD Secure Processor, or ccp/kvm_amd loaded without SEV`,
        EACCES: `no permission to open ${path} (root or the kvm group is needed)`,
      }),
      path,
    );
  }

  /**
   * Issues one command whose parameter struct is `decl`, filled from `params`; returns the struct as the
   * firmware left it. `lengthQuery` accepts INVALID_LEN (the firmware reporting a needed size).
   */
  private issue<T>(name: string, cmd: number, decl: StructDecl, params: object, lengthQuery = false): T {
    const data = this.buffers.allocate(decl.size, undefined, name);
    encodeExact(decl, params, data.bytes);
    const request = encodeExact(sevIssueCmd, { cmd, data: data.address, error: 0 });
    const r = ioctlRaw(this.fd, SEV_ISSUE_CMD, request);
    const error = decodeExact<{ error: number }>(sevIssueCmd, request).error;
    if (r < 0 && !(lengthQuery && error === SevStatus.INVALID_LEN)) {
      if (error !== 0) throw new SevFirmwareError(name, error);
      throw new SysError(`SEV_ISSUE_CMD ${name}`, -r);
    }
    return decodeExact<T>(decl, data.bytes);
  }

  platformStatus(): PlatformStatus {
    this.buffers.reset();
    const s = this.issue<{ api_major: number; api_minor: number; state: number; flags: number; build: number; guest_count: number }>(
      'PLATFORM_STATUS',
      SevPlatformCommand.PLATFORM_STATUS,
      sevUserDataStatus,
      {},
    );
    return { apiMajor: s.api_major, apiMinor: s.api_minor, build: s.build, state: platformStateName(s.state), flags: s.flags, guestCount: s.guest_count };
  }

  pdhCertExport(): { pdh: SevCertificate; chain: Uint8Array } {
    type Export = { pdh_cert_len: number; cert_chain_len: number };
    this.buffers.reset();
    const sizes = this.issue<Export>('PDH_CERT_EXPORT', SevPlatformCommand.PDH_CERT_EXPORT, sevUserDataPdhCertExport, {}, true);
    this.buffers.reset();
    const pdh = this.buffers.allocate(sizes.pdh_cert_len, undefined, 'PDH');
    const chain = this.buffers.allocate(sizes.cert_chain_len, undefined, 'certificate chain');
    const got = this.issue<Export>('PDH_CERT_EXPORT', SevPlatformCommand.PDH_CERT_EXPORT, sevUserDataPdhCertExport, {
      pdh_cert_address: pdh.address,
      pdh_cert_len: sizes.pdh_cert_len,
      cert_chain_address: chain.address,
      cert_chain_len: sizes.cert_chain_len,
    });
    return { pdh: SevCertificate.parse(pdh.bytes.slice(0, got.pdh_cert_len), 'PDH'), chain: chain.bytes.slice(0, got.cert_chain_len) };
  }

  pekCsr(): Uint8Array {
    this.buffers.reset();
    const { length } = this.issue<{ length: number }>('PEK_CSR', SevPlatformCommand.PEK_CSR, sevUserDataPekCsr, {}, true);
    this.buffers.reset();
    const csr = this.buffers.allocate(length, undefined, 'PEK CSR');
    const got = this.issue<{ length: number }>('PEK_CSR', SevPlatformCommand.PEK_CSR, sevUserDataPekCsr, { address: csr.address, length });
    return csr.bytes.slice(0, got.length);
  }

  getId(): Uint8Array {
    this.buffers.reset();
    const { length } = this.issue<{ length: number }>('GET_ID2', SevPlatformCommand.GET_ID2, sevUserDataGetId2, {}, true);
    this.buffers.reset();
    const id = this.buffers.allocate(length, undefined, 'ID');
    const got = this.issue<{ length: number }>('GET_ID2', SevPlatformCommand.GET_ID2, sevUserDataGetId2, { address: id.address, length });
    return id.bytes.slice(0, got.length);
  }

  close(): void {
    this.buffers.close();
    close(this.fd);
  }
}
