// Kernel ABI of the SEV paths: the /dev/sev platform commands (linux/psp-sev.h) and the KVM SEV launch
// commands carried by KVM_MEMORY_ENCRYPT_OP (struct kvm_sev_cmd and its payloads, linux/kvm.h). Declared
// through src/kvm/abi.ts so the ABI conformance test checks every size, offset and value against the headers.
import { _IOWR, constant, cStruct, ioctl } from '../sys/abi.js';

const PSP = 'linux/psp-sev.h';
const KVM = 'linux/kvm.h';
const u8 = 'uint8';
const u32 = 'uint32';
const u64 = 'uint64';

// /dev/sev: SEV_ISSUE_CMD { cmd, data -> one of the sev_user_data_* structs, error }.
export const sevIssueCmd = cStruct('struct sev_issue_cmd', PSP, { cmd: u32, data: u64, error: u32 }, { packed: true });
export const sevUserDataStatus = cStruct(
  'struct sev_user_data_status',
  PSP,
  {
    api_major: u8,
    api_minor: u8,
    state: u8,
    flags: u32,
    build: u8,
    guest_count: u32,
  },
  { packed: true },
);
export const sevUserDataPekCsr = cStruct('struct sev_user_data_pek_csr', PSP, { address: u64, length: u32 }, { packed: true });
export const sevUserDataPdhCertExport = cStruct(
  'struct sev_user_data_pdh_cert_export',
  PSP,
  {
    pdh_cert_address: u64,
    pdh_cert_len: u32,
    cert_chain_address: u64,
    cert_chain_len: u32,
  },
  { packed: true },
);
export const sevUserDataGetId2 = cStruct('struct sev_user_data_get_id2', PSP, { address: u64, length: u32 }, { packed: true });

export const SEV_ISSUE_CMD = ioctl('SEV_ISSUE_CMD', PSP, _IOWR('S'.charCodeAt(0), 0x0, sevIssueCmd.size));

export const SevPlatformCommand = {
  PLATFORM_STATUS: constant('SEV_PLATFORM_STATUS', PSP, 1),
  PEK_CSR: constant('SEV_PEK_CSR', PSP, 3),
  PDH_CERT_EXPORT: constant('SEV_PDH_CERT_EXPORT', PSP, 5),
  GET_ID2: constant('SEV_GET_ID2', PSP, 8),
} as const;

export const SEV_STATUS_FLAGS_CONFIG_ES = constant('SEV_STATUS_FLAGS_CONFIG_ES', PSP, 0x0100);

// KVM_MEMORY_ENCRYPT_OP: struct kvm_sev_cmd { id, data -> payload, error (firmware status), sev_fd }.
export const kvmSevCmd = cStruct('struct kvm_sev_cmd', KVM, { id: u32, data: u64, error: u32, sev_fd: u32 });
export const kvmSevLaunchStart = cStruct('struct kvm_sev_launch_start', KVM, {
  handle: u32,
  policy: u32,
  dh_uaddr: u64,
  dh_len: u32,
  session_uaddr: u64,
  session_len: u32,
});
export const kvmSevLaunchUpdateData = cStruct('struct kvm_sev_launch_update_data', KVM, { uaddr: u64, len: u32 });
export const kvmSevLaunchSecret = cStruct('struct kvm_sev_launch_secret', KVM, {
  hdr_uaddr: u64,
  hdr_len: u32,
  guest_uaddr: u64,
  guest_len: u32,
  trans_uaddr: u64,
  trans_len: u32,
});
export const kvmSevLaunchMeasure = cStruct('struct kvm_sev_launch_measure', KVM, { uaddr: u64, len: u32 });
export const kvmSevGuestStatus = cStruct('struct kvm_sev_guest_status', KVM, { handle: u32, policy: u32, state: u32 });

// enum sev_cmd_id. KVM_SEV_INIT2 (Linux 6.10) is not in the linux-libc-dev these headers come from.
export const KvmSevCommand = {
  INIT: constant('KVM_SEV_INIT', KVM, 0),
  ES_INIT: constant('KVM_SEV_ES_INIT', KVM, 1),
  LAUNCH_START: constant('KVM_SEV_LAUNCH_START', KVM, 2),
  LAUNCH_UPDATE_DATA: constant('KVM_SEV_LAUNCH_UPDATE_DATA', KVM, 3),
  LAUNCH_UPDATE_VMSA: constant('KVM_SEV_LAUNCH_UPDATE_VMSA', KVM, 4),
  LAUNCH_SECRET: constant('KVM_SEV_LAUNCH_SECRET', KVM, 5),
  LAUNCH_MEASURE: constant('KVM_SEV_LAUNCH_MEASURE', KVM, 6),
  LAUNCH_FINISH: constant('KVM_SEV_LAUNCH_FINISH', KVM, 7),
  GUEST_STATUS: constant('KVM_SEV_GUEST_STATUS', KVM, 16),
} as const;
