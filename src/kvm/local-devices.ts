// Devices that answer inside a vCPU thread, with no hop to the device thread: ranges where nothing is
// (the bus floats) and devices built in the worker from a module, for stateless or thread-safe ones.
import { Bus, type BusDevice } from '../devices/bus.js';
import { GuestMemory, type GuestMemoryDescriptor } from '../memory/guest-memory.js';
import { FLOATING_BUS } from './io-dispatch.js';
import { errorMessage } from '../sys/error-message.js';

/** How a vCPU-local range behaves. Specs cross to the worker by structured clone, so they hold no functions. */
export type LocalRange =
  | { space: 'pio' | 'mmio'; base: number; size: number; name: string; kind: 'absent' }
  | {
      space: 'pio' | 'mmio';
      base: number;
      size: number;
      name: string;
      kind: 'module';
      /** URL of an ES module exporting a LocalDeviceFactory named `exportName`. */
      module: string;
      exportName: string;
      /** Structured-clone-able options handed to the factory. */
      options?: unknown;
    };

/** What a local device factory receives: its options and, when the VM has any, guest memory. */
export interface LocalDeviceContext {
  options: unknown;
  memory?: GuestMemory;
  vcpu: number;
}

export type LocalDeviceFactory = (context: LocalDeviceContext) => BusDevice;

/** Reads return all ones, writes vanish: what a PC does for a port nobody decodes. */
const absent: BusDevice = {
  read: (_offset, data) => void data.fill(FLOATING_BUS),
  write: () => undefined,
};

export interface LocalBuses {
  pio: Bus;
  mmio: Bus;
}

export async function buildLocalBuses(ranges: readonly LocalRange[], vcpu: number, memory?: GuestMemoryDescriptor): Promise<LocalBuses> {
  const buses: LocalBuses = { pio: new Bus(`vCPU ${vcpu} local PIO`), mmio: new Bus(`vCPU ${vcpu} local MMIO`) };
  const guestMemory = memory ? GuestMemory.fromDescriptor(memory) : undefined;
  for (const range of ranges) {
    let device = absent;
    if (range.kind === 'module') {
      let factory: LocalDeviceFactory | undefined;
      try {
        factory = (await import(range.module))[range.exportName];
      } catch (e) {
        throw new Error(`local device ${range.name}: cannot load ${range.module}: ${errorMessage(e)}`);
      }
      if (typeof factory !== 'function') throw new Error(`local device ${range.name}: ${range.module} exports no function ${range.exportName}`);
      device = factory({ options: range.options, memory: guestMemory, vcpu });
    }
    buses[range.space].insert(device, range.base, range.size, range.name);
  }
  return buses;
}
