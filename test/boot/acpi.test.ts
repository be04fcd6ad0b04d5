import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { eisaId, pkgLength } from '../../src/boot/acpi/aml.js';
import { buildAcpiTables, checksum } from '../../src/boot/acpi/tables.js';
import { LowMemory } from '../../src/boot/layout.js';
import { virtioSlots } from '../../src/boot/prepare.js';

const exec = promisify(execFile);

const tables = buildAcpiTables({ cpus: 3, virtio: virtioSlots(2) });
const table = (name: string): Uint8Array => tables.placements.find((p) => p.what === `ACPI ${name}`)!.bytes;
const u32 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset).getUint32(at, true);
const u64 = (b: Uint8Array, at: number): number => Number(new DataView(b.buffer, b.byteOffset).getBigUint64(at, true));

/** Disassembles one table with iasl -d (acpica-tools) and returns the .dsl text and iasl's output. */
async function disassemble(name: string, bytes: Uint8Array): Promise<{ dsl: string; log: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'ts-vmm-acpi-'));
  try {
    const file = join(dir, `${name.toLowerCase()}.dat`);
    await writeFile(file, bytes);
    const { stdout, stderr } = await exec('iasl', ['-d', file], { cwd: dir });
    return { dsl: await readFile(join(dir, `${name.toLowerCase()}.dsl`), 'utf8'), log: stdout + stderr };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('ACPI tables', () => {
  it('links RSDP -> XSDT -> {FADT -> DSDT, MADT} at the addresses they are placed', () => {
    const rsdp = table('RSDP');
    expect(tables.rsdp).to.equal(LowMemory.acpi);
    expect(Buffer.from(rsdp.subarray(0, 8)).toString()).to.equal('RSD PTR ');
    const at = (what: string): number => tables.placements.find((p) => p.what === `ACPI ${what}`)!.guestAddress;
    expect(u64(rsdp, 24)).to.equal(at('XSDT'));
    const xsdt = table('XSDT');
    expect([u64(xsdt, 36), u64(xsdt, 44)]).to.deep.equal([at('FADT'), at('MADT')]);
    expect(u64(table('FADT'), 140)).to.equal(at('DSDT'));
    for (const p of tables.placements) expect(p.guestAddress % 16, p.what).to.equal(0);
  });

  it('has correct checksums (RSDP: first 20 bytes and all 36; SDTs: whole table)', () => {
    const rsdp = table('RSDP');
    expect(checksum(rsdp.subarray(0, 20))).to.equal(0);
    expect(checksum(rsdp)).to.equal(0);
    for (const name of ['XSDT', 'FADT', 'MADT', 'DSDT']) {
      const t = table(name);
      expect(checksum(t), name).to.equal(0);
      expect(u32(t, 4), `${name} length`).to.equal(t.length);
    }
  });

  it('disassembles cleanly with iasl, the DSDT declaring COM1, one LNRO0005 per virtio-mmio device, and \\_S5', async function () {
    this.timeout(30_000);
    const { dsl, log } = await disassemble('DSDT', table('DSDT'));
    expect(log).to.not.match(/error|warning/i);
    expect(dsl).to.match(/Device \(COM1\)[\s\S]*EisaId \("PNP0501"\)[\s\S]*0x03F8,[\s\S]*IRQNoFlags \(\)\s*\{4\}/);
    const devices = dsl.match(/Name \(_HID, "LNRO0005"\)/g) ?? [];
    expect(devices).to.have.length(2);
    expect(dsl).to.match(/Memory32Fixed \(ReadWrite,\s*0xD0000000,\s*\/\/ Address Base\s*0x00001000,/);
    expect(dsl).to.match(/Memory32Fixed \(ReadWrite,\s*0xD0001000,/);
    expect(dsl).to.match(/Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s*\{\s*0x00000005,/);
    expect(dsl).to.match(/Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s*\{\s*0x00000006,/);
    expect(dsl).to.match(/Name \(\\_S5, Package \(0x02\)[\s\S]*0x05,/);
  });

  it('FADT: hardware-reduced, reset register = 0xfe to port 0x64, sleep control/status registers', async function () {
    this.timeout(30_000);
    const { dsl, log } = await disassemble('FACP', table('FADT'));
    expect(log).to.not.match(/error|warning/i);
    expect(dsl).to.match(/Hardware Reduced \(V5\) : 1/);
    expect(dsl).to.match(/Reset Register Supported \(V2\) : 1/);
    expect(dsl).to.match(/Reset Register : \[Generic Address Structure\][\s\S]*?Space ID : 01[\s\S]*?Address : 0000000000000064/);
    expect(dsl).to.match(/Value to cause reset : FE/);
    expect(dsl).to.match(/Sleep Control Register : \[Generic Address Structure\][\s\S]*?Address : 0000000000000600/);
    expect(dsl).to.match(/Sleep Status Register : \[Generic Address Structure\][\s\S]*?Address : 0000000000000601/);
    expect(dsl).to.match(/CMOS RTC Not Present \(V5\) : 1/);
  });

  it('MADT: one enabled local APIC per vCPU, the IOAPIC, the IRQ0 override and LINT1 NMI', async function () {
    this.timeout(30_000);
    const { dsl, log } = await disassemble('APIC', table('MADT'));
    expect(log).to.not.match(/error|warning/i);
    expect(dsl.match(/Subtable Type : 00 \[Processor Local APIC\]/g)).to.have.length(3);
    expect(dsl.match(/Processor Enabled : 1/g)).to.have.length(3);
    expect(dsl).to.match(/Local Apic ID : 02/);
    expect(dsl).to.match(/\[I\/O APIC\][\s\S]*Address : FEC00000/);
    expect(dsl).to.match(/\[Interrupt Source Override\][\s\S]*Source : 00[\s\S]*Interrupt : 00000002/);
    expect(dsl).to.match(/\[Local APIC NMI\][\s\S]*Processor ID : FF[\s\S]*Interrupt Input LINT : 01/);
  });

  it('XSDT disassembles cleanly', async function () {
    this.timeout(30_000);
    const { log } = await disassemble('XSDT', table('XSDT'));
    expect(log).to.not.match(/error|warning/i);
  });
});

describe('AML encoding', () => {
  it('encodes PkgLength in one to four bytes, including its own length', () => {
    expect([...pkgLength(0)]).to.deep.equal([1]);
    expect([...pkgLength(0x3e)]).to.deep.equal([0x3f]);
    expect([...pkgLength(0x3f)]).to.deep.equal([0x41, 0x04]);
    expect([...pkgLength(0xffd)]).to.deep.equal([0x4f, 0xff]);
    expect([...pkgLength(0xffe)]).to.deep.equal([0x81, 0x00, 0x01]);
  });

  it('compresses EISA ids as ASL EISAID() does', () => {
    expect([...eisaId('PNP0501')]).to.deep.equal([0x0c, 0x41, 0xd0, 0x05, 0x01]);
    expect(() => eisaId('pnp0501')).to.throw(RangeError);
  });
});
