// The one thing `ts-vmm run` needs from the VMM: boot this kernel and initrd with these disks and this vsock
// device, let me watch the console, and let me stop it. Kept as an interface so the run logic is independent of
// how the machine is assembled.

export interface VmRequest {
  kernel: string;
  /** cpio archives, unpacked by the kernel one after the other (later files replace earlier ones). */
  initrd: readonly string[];
  cmdline: string;
  cpus: number;
  memoryMiB: number;
  /** In order: the first is the guest's /dev/vda. */
  disks: { path: string; readonly: boolean }[];
  /** Firecracker-style vsock: guest connect(2, P) reaches a host listener on `${udsPath}_${P}`. */
  vsock: { cid: number; udsPath: string };
  /** The guest's serial console (kernel messages, init errors). */
  consoleOutput: (bytes: Uint8Array) => void;
  /** A measured SEV launch, with the owner's side from a key broker or from files a local owner answers. */
  tee?: TeeRequest;
}

export interface TeeRequest {
  kind: 'sev' | 'sev-sim';
  /** sev-sim's platform identity directory. */
  simState?: string;
  /** The key broker; on hardware, `caChain` is AMD's ASK and ARK for the platform (sev-sim has its own). */
  kbs?: { url: string; workloadId: string; ca?: string; caChain?: string };
  owner?: { policy: number; godh: string; session: string; secretDir: string; secretTimeoutS: number };
}

export interface RunningVm {
  /** The VMM's process, where the VM runs in one (so that what owns the VM can be ended from outside). */
  readonly pid?: number;
  /** Settles when the VM has stopped and its resources are released, with a one-line account of why. */
  readonly exited: Promise<{ ok: boolean; reason: string }>;
  /** Stops the vCPUs and tears the VM down; `exited` settles afterwards. */
  stop(): void;
}

export type VmLauncher = (request: VmRequest) => Promise<RunningVm>;

/** Kernel parameters for a run: console on the first UART, quiet (each console byte is a VM exit), no PCI probe. */
export const RUN_CMDLINE = 'console=ttyS0 quiet loglevel=1 panic=-1 pci=off i8042.noaux i8042.nomux i8042.nopnp';
