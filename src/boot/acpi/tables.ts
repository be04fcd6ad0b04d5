// The ACPI tables the VMM writes for the guest: RSDP -> XSDT -> {FADT -> DSDT, MADT}. The platform is
// "hardware-reduced" (no PM1 blocks, SCI or legacy PIC), as on Firecracker and cloud-hypervisor: the
// FADT's sleep control/status registers carry poweroff to the VMM, its reset register carries reboot.
import {
  amlConcat,
  device,
  edgeInterrupt,
  eisaId,
  integer,
  ioPort,
  irqNoFlags,
  memory32Fixed,
  name,
  packageOf,
  resourceTemplate,
  scope,
  string,
  type Aml,
} from './aml.js';
import { COM1_IRQ, IOAPIC_ADDRESS, LAPIC_ADDRESS, LowMemory, Ports } from '../layout.js';
import type { Placement } from '../boot-plan.js';

export interface VirtioMmioSlot {
  base: number;
  size: number;
  /** IOAPIC pin (GSI). */
  irq: number;
}

export interface AcpiInput {
  cpus: number;
  virtio: readonly VirtioMmioSlot[];
  /** Where the tables go; the RSDP is first. Must be 16-byte aligned. */
  base?: number;
}

export interface AcpiTables {
  rsdp: number;
  placements: Placement[];
}

const OEM_ID = 'TSVMM ';
const OEM_TABLE_ID = 'TSVMMBOX';
const CREATOR_ID = 'TSVM';
const HEADER_SIZE = 36;
/** The S5 (soft-off) sleep type value the DSDT's \_S5 advertises and the sleep control register receives. */
export const S5_SLEEP_TYPE = 5;
/** Most processors a MADT of 8-bit local APIC entries can describe (0xff is the broadcast id). */
export const MAX_CPUS = 254;

export function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return sum;
}

function ascii(text: string, length: number): Uint8Array {
  if (text.length !== length) throw new RangeError(`"${text}" must be ${length} characters`);
  return new TextEncoder().encode(text);
}

/** A System Description Table: the 36-byte header, then `body`, with the checksum fixed up. */
function sdt(signature: string, revision: number, body: Uint8Array): Uint8Array {
  const t = new Uint8Array(HEADER_SIZE + body.length);
  const v = new DataView(t.buffer);
  t.set(ascii(signature, 4), 0);
  v.setUint32(4, t.length, true);
  t[8] = revision;
  t.set(ascii(OEM_ID, 6), 10);
  t.set(ascii(OEM_TABLE_ID, 8), 16);
  v.setUint32(24, 1, true);
  t.set(ascii(CREATOR_ID, 4), 28);
  v.setUint32(32, 1, true);
  t.set(body, HEADER_SIZE);
  t[9] = (0x100 - checksum(t)) & 0xff;
  return t;
}

export function dsdt(virtio: readonly VirtioMmioSlot[]): Uint8Array {
  const com1 = device('COM1', [
    name('_HID', eisaId('PNP0501')),
    name('_UID', integer(0)),
    name('_CRS', resourceTemplate([ioPort(Ports.com1, 8), irqNoFlags(COM1_IRQ)])),
  ]);
  const mmio = virtio.map((slot, i) =>
    device(`V${i.toString(16).toUpperCase().padStart(3, '0')}`, [
      name('_HID', string('LNRO0005')),
      name('_UID', integer(i)),
      name('_CRS', resourceTemplate([memory32Fixed(slot.base, slot.size), edgeInterrupt(slot.irq)])),
    ]),
  );
  const body: Aml[] = [scope('\\_SB', [com1, ...mmio]), name('\\_S5', packageOf([integer(S5_SLEEP_TYPE), integer(0)]))];
  return sdt('DSDT', 2, amlConcat(body));
}

const GAS_SYSTEM_IO = 1;
const GAS_ACCESS_BYTE = 1;

function genericAddress(into: DataView, at: number, port: number): void {
  into.setUint8(at, GAS_SYSTEM_IO);
  into.setUint8(at + 1, 8);
  into.setUint8(at + 2, 0);
  into.setUint8(at + 3, GAS_ACCESS_BYTE);
  into.setBigUint64(at + 4, BigInt(port), true);
}

const FADT_SIZE = 276;
const FADT_FLAGS = {
  WBINVD: 1 << 0,
  RESET_REG_SUP: 1 << 10,
  HW_REDUCED_ACPI: 1 << 20,
};
const IAPC_BOOT_ARCH = {
  VGA_NOT_PRESENT: 1 << 2,
  CMOS_RTC_NOT_PRESENT: 1 << 5,
};

/** FADT revision 6 (ACPI 6.x layout), hardware-reduced. No 8042 flag: the kernel need not probe for a keyboard. */
export function fadt(dsdtAddress: number): Uint8Array {
  const body = new Uint8Array(FADT_SIZE - HEADER_SIZE);
  const v = new DataView(body.buffer);
  const at = (offset: number): number => offset - HEADER_SIZE;
  v.setUint32(at(40), dsdtAddress, true);
  v.setUint16(at(109), IAPC_BOOT_ARCH.VGA_NOT_PRESENT | IAPC_BOOT_ARCH.CMOS_RTC_NOT_PRESENT, true);
  v.setUint32(at(112), FADT_FLAGS.WBINVD | FADT_FLAGS.RESET_REG_SUP | FADT_FLAGS.HW_REDUCED_ACPI, true);
  genericAddress(v, at(116), Ports.acpiReset);
  v.setUint8(at(128), Ports.acpiResetValue);
  v.setUint8(at(131), 5); // FADT minor version: ACPI 6.5
  v.setBigUint64(at(140), BigInt(dsdtAddress), true);
  genericAddress(v, at(244), Ports.acpiSleepControl);
  genericAddress(v, at(256), Ports.acpiSleepStatus);
  body.set(new TextEncoder().encode('TSVMM\0\0\0'), at(268));
  return sdt('FACP', 6, body);
}

const MADT_ENABLED = 1;

export function madt(cpus: number): Uint8Array {
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) throw new RangeError(`vCPU count ${cpus} must be 1..${MAX_CPUS}`);
  const entries: number[][] = [];
  for (let id = 0; id < cpus; id++) entries.push([0, 8, id, id, ...u32(MADT_ENABLED)]);
  entries.push([1, 12, 0, 0, ...u32(IOAPIC_ADDRESS), ...u32(0)]);
  // ISA IRQ 0 (the PIT) is wired to IOAPIC pin 2 on every PC; other ISA IRQs map 1:1.
  entries.push([2, 10, 0, 0, ...u32(2), 0, 0]);
  // LINT1 of every processor is the NMI line, matching what the VMM programs into each LAPIC.
  entries.push([4, 6, 0xff, 0, 0, 1]);
  const body = Uint8Array.from([...u32(LAPIC_ADDRESS), ...u32(0), ...entries.flat()]);
  return sdt('APIC', 5, body);
}

function u32(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff];
}

export function xsdt(tables: readonly number[]): Uint8Array {
  const body = new Uint8Array(tables.length * 8);
  const v = new DataView(body.buffer);
  for (const [i, address] of tables.entries()) v.setBigUint64(i * 8, BigInt(address), true);
  return sdt('XSDT', 1, body);
}

export function rsdp(xsdtAddress: number): Uint8Array {
  const t = new Uint8Array(36);
  const v = new DataView(t.buffer);
  t.set(ascii('RSD PTR ', 8), 0);
  t.set(ascii(OEM_ID, 6), 9);
  t[15] = 2;
  v.setUint32(20, t.length, true);
  v.setBigUint64(24, BigInt(xsdtAddress), true);
  t[8] = (0x100 - checksum(t.subarray(0, 20))) & 0xff;
  t[32] = (0x100 - checksum(t)) & 0xff;
  return t;
}

const align = (n: number, to: number): number => Math.ceil(n / to) * to;

/** Lays the tables out from `base` (RSDP first) and returns them with their guest addresses. */
export function buildAcpiTables(input: AcpiInput): AcpiTables {
  const base = input.base ?? LowMemory.acpi;
  const placements: Placement[] = [];
  let next = base;
  const put = (what: string, bytes: Uint8Array): number => {
    const address = next;
    placements.push({ what, guestAddress: address, bytes });
    next = align(address + bytes.length, 16);
    return address;
  };
  // The RSDP must come first and its size is fixed, so the XSDT address is known before it is built.
  const rsdpAddress = base;
  next = align(base + 36, 16);
  const dsdtAddress = put('ACPI DSDT', dsdt(input.virtio));
  const fadtAddress = put('ACPI FADT', fadt(dsdtAddress));
  const madtAddress = put('ACPI MADT', madt(input.cpus));
  const xsdtAddress = put('ACPI XSDT', xsdt([fadtAddress, madtAddress]));
  placements.unshift({ what: 'ACPI RSDP', guestAddress: rsdpAddress, bytes: rsdp(xsdtAddress) });
  if (next > LowMemory.acpiEnd) throw new RangeError(`ACPI tables (${next - base} bytes) overflow their 64 KiB at 0x${base.toString(16)}`);
  return { rsdp: rsdpAddress, placements };
}
