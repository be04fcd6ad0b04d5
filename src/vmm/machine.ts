// Assembles and runs one VM on KVM: guest RAM (and the firmware ROM), the in-kernel interrupt
// controllers and PIT, the platform devices, the virtio-mmio devices, one worker thread per vCPU,
// then waits for the first event that ends the run and turns it into a MachineExit.
import { S5_SLEEP_TYPE } from '../boot/acpi/tables.js';
import { placeBootPlan } from '../boot/boot-plan.js';
import { COM1_IRQ, FIRMWARE_ADDRESS, FIRMWARE_SIZE, Ports, TSS_ADDRESS } from '../boot/layout.js';
import type { PreparedBoot } from '../boot/prepare.js';
import { setUpVcpu } from '../boot/vcpu-state.js';
import { ACPI_SLEEP_PORTS, AcpiSleepRegisters } from '../devices/acpi-sleep.js';
import { Bus } from '../devices/bus.js';
import { I8042, I8042_PORTS } from '../devices/i8042.js';
import type { StopRequestSink } from '../devices/platform-events.js';
import { type LocalSerialOptions, SERIAL_MODULE, Serial16550, UART_REGISTERS } from '../devices/serial.js';
import { KVM_CAP_TSC_DEADLINE_TIMER, KVM_MEM_READONLY, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN } from '../kvm/constants.js';
import { EventFd } from '../sys/eventfd.js';
import { IrqfdInterrupt } from '../kvm/interrupts.js';
import { Kvm } from '../kvm/kvm.js';
import type { RecordedRange } from '../kvm/exit-recorder.js';
import type { LocalRange } from '../kvm/local-devices.js';
import type { IoBuses, IoEventSpec, VcpuStop } from '../kvm/types.js';
import type { VcpuWorkerPool } from '../kvm/vcpu-worker-pool.js';
import { VcpuThreads } from '../kvm/vcpu-threads.js';
import type { Vcpu } from '../kvm/vcpu.js';
import type { Vm } from '../kvm/vm.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { createVirtioMmioDevice, type VirtioDeviceSpec } from '../virtio/factory.js';
import { interruptRegistersRange } from '../virtio/interrupt-status.js';
import { IoeventfdNotifications } from '../virtio/ioeventfd.js';
import { ConsoleWatch } from './console-watch.js';
import type { MachineWatch } from './machine-watch.js';
import type { MachineExit } from './exit-status.js';

/**
 * A confidential launch (src/sev) takes over two steps of the plain one: it initialises the VM's
 * memory encryption before anything else exists, and, once every placement is in guest RAM and every
 * vCPU is set up, encrypts and measures them in place (LAUNCH_START .. LAUNCH_FINISH) before any runs.
 */
export interface ConfidentialLaunch {
  /** Whether guest memory is really encrypted (the guest then sees CPUID 0x8000001F and sets the C-bit). */
  encryptsMemory: boolean;
  initVm(vm: Vm): void | Promise<void>;
  launch(context: { vm: Vm; memory: GuestMemory; boot: PreparedBoot; vcpus: readonly Vcpu[] }): Promise<void>;
}

export interface MachineOptions {
  /** Absent for a plain launch. */
  confidential?: ConfidentialLaunch;
  boot: PreparedBoot;
  /** In device order (disks first: vda, vdb, ...), one per slot in `boot.virtio`. */
  virtio?: readonly VirtioDeviceSpec[];
  /** Receives the guest's serial console output. */
  consoleOutput: (bytes: Uint8Array) => void;
  /** Bytes for the guest's serial console input. */
  consoleInput?: NodeJS.ReadableStream;
  kvmPath?: string;
  /** vCPU worker threads started ahead of the VM. */
  vcpuWorkers?: VcpuWorkerPool;
  /** Watches the run's exits and milestones (--trace, --stats, --timeline); absent, nothing is recorded. */
  watch?: MachineWatch;
  /** Stops the machine from outside: its vCPUs are kicked out of the guest and it is torn down. */
  stop?: AbortSignal;
  /** Called once the boot plan is in guest RAM (and measured): the host's copies of its bytes are no longer read. */
  bootPlaced?: () => void;
}

/**
 * Ports the kernel probes and must find empty, answered inside the vCPU threads (all ones) so a probe
 * costs no trip to the device thread: POST/io-delay, CMOS RTC, COM2-4, PCI configuration mechanism #1.
 */
const ABSENT_PORTS: LocalRange[] = [
  { space: 'pio', base: 0x70, size: 2, name: 'CMOS RTC (absent)', kind: 'absent' },
  { space: 'pio', base: 0x80, size: 1, name: 'POST port', kind: 'absent' },
  { space: 'pio', base: 0x2e8, size: 8, name: 'COM4 (absent)', kind: 'absent' },
  { space: 'pio', base: 0x2f8, size: 8, name: 'COM2 (absent)', kind: 'absent' },
  { space: 'pio', base: 0x3e8, size: 8, name: 'COM3 (absent)', kind: 'absent' },
  { space: 'pio', base: 0xcf8, size: 8, name: 'PCI configuration (absent)', kind: 'absent' },
];

/**
 * Writes the kernel makes by the thousand to ports nobody decodes: the PCI configuration address
 * (early quirks and the AGP aperture check scan every bus through 0xcf8/0xcfc) and the io-delay port.
 * An ioeventfd nobody reads completes them inside KVM, with no exit at all; other sizes still exit
 * and meet the absent ranges above.
 */
const DISCARDED_WRITES: IoEventSpec[] = [
  { space: 'pio', address: 0xcf8, length: 4 },
  { space: 'pio', address: 0x80, length: 1 },
];

type Teardown = (() => void | Promise<void>)[];

export async function runMachine(options: MachineOptions): Promise<MachineExit> {
  const { boot } = options;
  const specs = options.virtio ?? [];
  if (specs.length !== boot.virtio.length) throw new Error(`boot plan has ${boot.virtio.length} virtio slots for ${specs.length} devices`);
  const teardown: Teardown = [];
  const kvm = Kvm.open(options.kvmPath);
  teardown.push(() => kvm.close());
  try {
    const vm = kvm.createVm();
    teardown.push(() => vm.close());
    await options.confidential?.initVm(vm);
    // Firecracker's order: TSS, then the in-kernel IOAPIC/PIC/LAPICs and the PIT, before any vCPU exists.
    vm.setTssAddress(TSS_ADDRESS);
    vm.createIrqchip();
    vm.createPit2();

    const sink = new EventFd();
    teardown.push(() => sink.close());
    for (const spec of DISCARDED_WRITES) vm.ioeventfd(sink, spec);

    const memory = guestMemory(vm, boot);
    placeBootPlan(memory, boot.plan);

    // The first event that ends the run wins. It stops every vCPU at once, before the device thread
    // answers the access that carried it, so the guest cannot run on past its own reset request
    // (Linux falls back to a deliberate triple fault a few microseconds after asking for a reset).
    let threads: VcpuThreads | undefined;
    let resolveFinished!: (exit: MachineExit) => void;
    const finished = new Promise<MachineExit>((resolve) => {
      resolveFinished = resolve;
    });
    let ended = false;
    const finish = (exit: MachineExit): void => {
      if (ended) return;
      ended = true;
      void threads?.stop();
      resolveFinished(exit);
    };
    const watch = new ConsoleWatch((panic) => finish({ kind: 'guest-failed', reason: `guest kernel panic: ${panic}` }));
    // The console reaches this thread through a ring: what the guest printed before it asked to stop
    // (a panic message, say) is taken first.
    let deliverConsole = (): void => undefined;
    const stopRequest: StopRequestSink = (request, detail) => {
      deliverConsole();
      const panic = watch.panic;
      finish(panic !== undefined ? { kind: 'guest-failed', reason: `guest kernel panic: ${panic}` } : { kind: 'guest-stopped', request, detail });
    };

    const buses = { pio: new Bus('PIO'), mmio: new Bus('MMIO') };
    const serial = attachPlatformDevices(vm, buses, options.consoleOutput, watch, options.watch, stopRequest, teardown);
    deliverConsole = serial.deliverOutput;
    const localRanges = [serial.range, ...ABSENT_PORTS, ...(await attachVirtioDevices(vm, buses, memory, boot, specs, teardown))];
    const vcpus = createVcpus(kvm, vm, boot, options.confidential?.encryptsMemory === true, teardown);

    await options.confidential?.launch({ vm, memory, boot, vcpus });
    options.bootPlaced?.();

    const recorders = options.watch?.recorders(vcpus.length, recordedRanges(localRanges, buses));
    threads = new VcpuThreads(vcpus, buses, { localRanges, workers: options.vcpuWorkers, recorders });
    threads.onStop((stop) => {
      if (stop.reason === 'stopped') return;
      deliverConsole();
      finish(exitForStop(stop, watch.panic));
    });
    const onInput = (chunk: Buffer | string): void => serial.uart.enqueueInput(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    options.consoleInput?.on('data', onInput);
    teardown.push(() => {
      options.consoleInput?.off('data', onInput);
      options.consoleInput?.pause();
    });

    options.watch?.mark(boot.entry === 'firmware' ? 'vCPUs start: firmware reset vector' : 'vCPUs start: kernel 64-bit entry');
    threads.start();
    // Taken once the vCPUs run, so a stop asked for while the VM was built ends it here.
    const onStop = (): void => finish({ kind: 'stopped', reason: 'the VM was stopped' });
    if (options.stop?.aborted) onStop();
    options.stop?.addEventListener('abort', onStop, { once: true });
    teardown.push(() => options.stop?.removeEventListener('abort', onStop));
    const exit = await finished;
    await threads.stop();
    return exit;
  } finally {
    for (const step of teardown.reverse()) await step();
  }
}

/** The COM1 UART, answered in the vCPU threads, and how its output reaches the console. */
interface PlatformSerial {
  uart: Serial16550;
  range: LocalRange;
  /** Hands the console what the guest has transmitted so far. */
  deliverOutput(): void;
}

/**
 * The PC's own devices: the COM1 UART (the console, watched for a panic; its registers answered in
 * the vCPU threads), the i8042 and ACPI's sleep registers (stop requests).
 */
function attachPlatformDevices(
  vm: Vm,
  buses: IoBuses,
  consoleOutput: (bytes: Uint8Array) => void,
  watch: ConsoleWatch,
  machineWatch: MachineWatch | undefined,
  stopRequest: StopRequestSink,
  teardown: Teardown,
): PlatformSerial {
  const serialIrq = new IrqfdInterrupt(vm, COM1_IRQ);
  teardown.push(() => serialIrq.close());
  const serial = new Serial16550(serialIrq);
  const output = serial.watchOutput((bytes) => {
    watch.feed(bytes);
    machineWatch?.console(bytes);
    consoleOutput(bytes);
  });
  teardown.push(() => output.stop());
  const options: LocalSerialOptions = { state: serial.state, interruptFd: serialIrq.eventfd.fd };
  const range: LocalRange = {
    space: 'pio',
    base: Ports.com1,
    size: UART_REGISTERS,
    name: 'COM1 16550A',
    kind: 'module',
    module: SERIAL_MODULE,
    exportName: 'localSerial',
    options,
  };
  buses.pio.insert(new I8042(stopRequest), Ports.i8042, I8042_PORTS, 'i8042');
  buses.pio.insert(new AcpiSleepRegisters(S5_SLEEP_TYPE, stopRequest), Ports.acpiSleepControl, ACPI_SLEEP_PORTS, 'ACPI sleep registers');
  return { uart: serial, range, deliverOutput: output.deliver };
}

/**
 * The virtio-mmio devices in their slots. Queue kicks complete inside KVM (ioeventfd) and reach the device
 * without a vCPU exit; disks are served on an I/O thread each, which takes its kicks and raises its
 * interrupts itself. Answers the vCPU-local ranges of their interrupt registers: the driver's
 * InterruptStatus read and ACK after every interrupt are answered in the vCPU thread.
 */
async function attachVirtioDevices(
  vm: Vm,
  buses: IoBuses,
  memory: GuestMemory,
  boot: PreparedBoot,
  specs: readonly VirtioDeviceSpec[],
  teardown: Teardown,
): Promise<LocalRange[]> {
  const notifications = new IoeventfdNotifications(vm);
  const localRanges: LocalRange[] = [];
  for (const [i, spec] of specs.entries()) {
    const slot = boot.virtio[i]!;
    const interrupt = new IrqfdInterrupt(vm, slot.irq);
    teardown.push(() => interrupt.close());
    const built = await createVirtioMmioDevice(spec, { memory, interrupt, baseAddress: slot.base, notifications, ioThread: { interrupt: interrupt.eventfd } });
    teardown.push(() => built.close());
    if (built.size > slot.size)
      throw new Error(`${built.transport.name} needs 0x${built.size.toString(16)} bytes of MMIO; its slot has 0x${slot.size.toString(16)}`);
    buses.mmio.insert(built.transport, slot.base, built.size, built.transport.name);
    localRanges.push(interruptRegistersRange(slot.base, built.transport.interruptStatus, built.transport.name));
  }
  return localRanges;
}

/** Every range an exit can reach, vCPU-local ones first as the vCPU thread consults them first. */
function recordedRanges(localRanges: readonly LocalRange[], buses: IoBuses): RecordedRange[] {
  const range = (space: 'pio' | 'mmio') => (r: { base: number; size: number; name: string }) => ({ space, base: r.base, size: r.size, name: r.name });
  return [...localRanges.map((r) => range(r.space)(r)), ...buses.pio.list().map(range('pio')), ...buses.mmio.list().map(range('mmio'))];
}

/** The vCPUs in their reset or boot-protocol state: the boot CPU at the firmware or the kernel's 64-bit entry. */
function createVcpus(kvm: Kvm, vm: Vm, boot: PreparedBoot, memoryEncryption: boolean, teardown: Teardown): Vcpu[] {
  const supportedCpuid = kvm.getSupportedCpuid();
  const tscDeadlineTimer = kvm.checkExtension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  const vcpus: Vcpu[] = [];
  for (let id = 0; id < boot.cpus; id++) {
    const vcpu = vm.createVcpu(id);
    vcpus.push(vcpu);
    teardown.push(() => vcpu.close());
    setUpVcpu(vcpu, {
      supportedCpuid,
      vcpus: boot.cpus,
      memoryEncryption,
      tscDeadlineTimer,
      bsp: boot.entry === 'firmware' ? { kind: 'firmware' } : { kind: 'direct', entry: boot.plan.kernelEntry, zeroPage: boot.plan.zeroPage },
    });
  }
  return vcpus;
}

/** RAM slots, then the firmware ROM as a read-only slot (guest writes to it become ignored MMIO exits). */
function guestMemory(vm: Vm, boot: PreparedBoot): GuestMemory {
  const rom = boot.entry === 'firmware' ? [{ guestAddress: FIRMWARE_ADDRESS, size: FIRMWARE_SIZE, readOnly: true }] : [];
  const memory = GuestMemory.anonymous([...boot.ram, ...rom]);
  memory.regions.forEach((region, slot) => {
    if (region.backing.kind !== 'host') throw new Error('guest memory must be mmap-backed for KVM');
    vm.setUserMemoryRegion({
      slot,
      guestAddress: region.guestAddress,
      size: region.size,
      hostAddress: region.backing.hostAddress,
      flags: region.readOnly ? KVM_MEM_READONLY : 0,
    });
  });
  return memory;
}

function exitForStop(stop: VcpuStop, panic: string | undefined): MachineExit {
  const regs = stop.regs;
  if (panic !== undefined) return { kind: 'guest-failed', reason: `guest kernel panic: ${panic}`, regs };
  switch (stop.reason) {
    case 'system-event':
      if (stop.systemEvent === KVM_SYSTEM_EVENT_SHUTDOWN) return { kind: 'guest-stopped', request: 'poweroff', detail: stop.message };
      if (stop.systemEvent === KVM_SYSTEM_EVENT_RESET) return { kind: 'guest-stopped', request: 'reset', detail: stop.message };
      return { kind: 'guest-failed', reason: stop.message, regs };
    case 'shutdown':
      return { kind: 'guest-failed', reason: `vCPU ${stop.vcpu}: triple fault (KVM_EXIT_SHUTDOWN)`, regs };
    case 'error':
      return { kind: 'vmm-error', reason: stop.message, regs };
    default:
      return { kind: 'guest-failed', reason: stop.message, regs };
  }
}
