// The hardware-reduced ACPI sleep registers (ACPI 6.5 section 4.8.3.7): the FADT points the OS at a
// control register and a status register. Writing SLP_EN with the \_S5 sleep type is poweroff.
import type { BusDevice } from './bus.js';
import type { StopRequestSink } from './platform-events.js';

/** Control at offset 0, status at offset 1. */
export const ACPI_SLEEP_PORTS = 2;
const CONTROL = 0;

const SLP_EN = 0x20;
const SLP_TYP_SHIFT = 2;
const SLP_TYP_MASK = 0x7;

export class AcpiSleepRegisters implements BusDevice {
  constructor(
    private readonly softOffType: number,
    private readonly stop: StopRequestSink,
  ) {}

  read(_offset: number, data: Uint8Array): void {
    // Status: no wake event ever pending.
    data.fill(0);
  }

  write(offset: number, data: Uint8Array): void {
    const value = data[0];
    if (offset !== CONTROL || value === undefined || !(value & SLP_EN)) return;
    const type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
    if (type === this.softOffType) this.stop('poweroff', 'the guest entered ACPI S5 (soft off)');
  }
}
