// The SEV-ES VMSA: the vCPU's register save area, encrypted and measured at LAUNCH_UPDATE_VMSA (one 4 KiB
// page per vCPU). Layout: the SEV-ES save area of the AMD64 APM vol. 2 ("VMCB Layout, State Save Area").
// resetVmsa() gives the state KVM plus the VMM hand the firmware at reset, as virtee/sev and
// `sevctl vmsa build` reconstruct it for QEMU and libkrun, so a guest owner can predict SEV-ES measurements.
import { guidText } from './guid.js';

export const VMSA_SIZE = 4096;

export interface VmcbSegment {
  selector: number;
  attrib: number;
  limit: number;
  base: bigint;
}

const SEGMENTS = ['es', 'cs', 'ss', 'ds', 'fs', 'gs', 'gdtr', 'ldtr', 'idtr', 'tr'] as const;
type SegmentName = (typeof SEGMENTS)[number];

/** 64-bit fields by offset (the save area's reserved gaps stay zero). */
const U64_FIELDS = {
  efer: 0xd0,
  xss: 0x140,
  cr4: 0x148,
  cr3: 0x150,
  cr0: 0x158,
  dr7: 0x160,
  dr6: 0x168,
  rflags: 0x170,
  rip: 0x178,
  rsp: 0x1d8,
  rax: 0x1f8,
  star: 0x200,
  lstar: 0x208,
  cstar: 0x210,
  sfmask: 0x218,
  kernelGsBase: 0x220,
  sysenterCs: 0x228,
  sysenterEsp: 0x230,
  sysenterEip: 0x238,
  cr2: 0x240,
  gPat: 0x268,
  dbgctl: 0x270,
  rcx: 0x308,
  rdx: 0x310,
  rbx: 0x318,
  rbp: 0x328,
  rsi: 0x330,
  rdi: 0x338,
  r8: 0x340,
  r9: 0x348,
  r10: 0x350,
  r11: 0x358,
  r12: 0x360,
  r13: 0x368,
  r14: 0x370,
  r15: 0x378,
  xcr0: 0x3e8,
} as const;
type RegisterName = keyof typeof U64_FIELDS;
const CPL = 0xcb;

export type VmsaState = Record<SegmentName, VmcbSegment> & Record<RegisterName, bigint> & { cpl: number };

export function emptyVmsaState(): VmsaState {
  const segments = Object.fromEntries(SEGMENTS.map((s) => [s, { selector: 0, attrib: 0, limit: 0, base: 0n }]));
  const registers = Object.fromEntries(Object.keys(U64_FIELDS).map((r) => [r, 0n]));
  return { ...segments, ...registers, cpl: 0 } as VmsaState;
}

export function encodeVmsa(state: VmsaState): Uint8Array {
  const page = new Uint8Array(VMSA_SIZE);
  const v = new DataView(page.buffer);
  SEGMENTS.forEach((name, i) => {
    const s = state[name];
    v.setUint16(i * 16, s.selector, true);
    v.setUint16(i * 16 + 2, s.attrib, true);
    v.setUint32(i * 16 + 4, s.limit, true);
    v.setBigUint64(i * 16 + 8, s.base, true);
  });
  v.setUint8(CPL, state.cpl);
  for (const [name, offset] of Object.entries(U64_FIELDS) as [RegisterName, number][]) v.setBigUint64(offset, state[name], true);
  return page;
}

/** The fields encodeVmsa writes, read back from a page (the rest of the save area is not interpreted). */
export function decodeVmsa(page: Uint8Array): VmsaState {
  if (page.length !== VMSA_SIZE) throw new RangeError(`a VMSA is ${VMSA_SIZE} bytes, not ${page.length}`);
  const v = new DataView(page.buffer, page.byteOffset, page.byteLength);
  const s = emptyVmsaState();
  SEGMENTS.forEach((name, i) => {
    s[name] = {
      selector: v.getUint16(i * 16, true),
      attrib: v.getUint16(i * 16 + 2, true),
      limit: v.getUint32(i * 16 + 4, true),
      base: v.getBigUint64(i * 16 + 8, true),
    };
  });
  s.cpl = v.getUint8(CPL);
  for (const [name, offset] of Object.entries(U64_FIELDS) as [RegisterName, number][]) s[name] = v.getBigUint64(offset, true);
  return s;
}

/**
 * `sevctl vmsa update`: a VMSA page with a CPU signature in rdx and, for a QEMU AP, OVMF's reset
 * address in rip and the CS base; every other byte kept as it was.
 */
export function updateVmsa(page: Uint8Array, o: Pick<ResetOptions, 'sku' | 'apResetAddress'>): Uint8Array {
  const out = Uint8Array.from(page);
  decodeVmsa(out);
  const v = new DataView(out.buffer);
  if (o.sku) v.setBigUint64(U64_FIELDS.rdx, cpuSignature(o.sku), true);
  if (o.apResetAddress !== undefined) {
    v.setBigUint64(U64_FIELDS.rip, BigInt(o.apResetAddress & 0xffff), true);
    v.setBigUint64(SEGMENTS.indexOf('cs') * 16 + 8, BigInt(o.apResetAddress & 0xffff0000), true);
  }
  return out;
}

// Segment attributes in the VMCB's packed 12-bit form (descriptor bits 8-15 and 20-23).
const P = 1 << 7;
const S = 1 << 4;
const CODE = 1 << 3;
const READ_WRITE = 1 << 1;
const ACCESSED = 1 << 0;
const DATA_ATTRIB = P | S | READ_WRITE | ACCESSED;

export interface ResetOptions {
  /** Whose reset state: QEMU's x86_cpu_reset or libkrun's setup_regs. */
  vmm: 'qemu' | 'krun';
  cpu: number;
  /** CPUID family/model/stepping: KVM puts the signature in rdx at reset. */
  sku?: { family: number; model: number; stepping: number };
  /** QEMU, APs: where OVMF's SEV-ES reset block sends them (ovmfApResetAddress). */
  apResetAddress?: number;
}

/** The reset VMSA of one vCPU as KVM and the VMM set it up. */
export function resetVmsa(o: ResetOptions): Uint8Array {
  const s = emptyVmsaState();
  // Architectural reset (AMD64 APM vol. 2, "Processor Initialization State").
  s.cr0 = 1n << 4n;
  s.rip = 0xfff0n;
  s.cs = { selector: 0xf000, attrib: 0, limit: 0xffff, base: 0xffff0000n };
  for (const seg of ['ds', 'es', 'fs', 'gs', 'ss', 'gdtr', 'idtr', 'ldtr', 'tr'] as const) s[seg].limit = 0xffff;
  s.dr6 = 0xffff0ff0n;
  s.dr7 = 0x400n;
  s.rflags = 0x2n;
  s.xcr0 = 0x1n;
  // KVM: CR4.MCE, EFER.SVME, LDT and busy 16-bit TSS system segments, the default PAT.
  s.cr4 = 0x40n;
  s.efer = 0x1000n;
  s.ldtr.attrib = P | 0x2;
  s.tr.attrib = P | 0x3;
  s.gPat = 0x0007040600070406n;
  if (o.vmm === 'qemu') {
    s.tr.attrib = P | 0xb; // QEMU: busy 32-bit TSS
    s.cs.attrib = P | S | CODE | READ_WRITE | ACCESSED;
    for (const seg of ['ds', 'es', 'ss', 'fs', 'gs'] as const) s[seg].attrib = DATA_ATTRIB;
    if (o.cpu > 0 && o.apResetAddress !== undefined) {
      s.rip = BigInt(o.apResetAddress & 0xffff);
      s.cs.base = BigInt(o.apResetAddress & 0xffff0000);
    }
  } else {
    s.rsi = 0x7000n;
    s.rbp = 0x8ff0n;
    s.rsp = 0x8ff0n;
    s.cs.attrib = P | S | CODE | READ_WRITE;
    for (const seg of ['ds', 'es', 'fs', 'gs'] as const) s[seg].attrib = DATA_ATTRIB;
    s.ss.attrib = P | S | READ_WRITE;
    if (o.cpu > 0) {
      s.rip = 0n;
      s.rsp = 0n;
      s.rbp = 0n;
      s.rsi = 0n;
      s.cs.selector = 0x9100;
      s.cs.base = 0x91000n;
    }
  }
  if (o.sku) s.rdx = cpuSignature(o.sku);
  return encodeVmsa(s);
}

/** CPUID leaf 1 EAX: stepping, model and extended model, family and extended family. */
export function cpuSignature({ family, model, stepping }: { family: number; model: number; stepping: number }): bigint {
  let sig = stepping & 0xf;
  const f = family & 0xfff;
  sig |= f > 0xf ? 0xf00 | ((f - 0xf) << 20) : f << 8;
  const m = model & 0xff;
  sig |= ((m & 0xf) << 4) | ((m >> 4) << 16);
  return BigInt(sig >>> 0);
}

const OVMF_TABLE_FOOTER_GUID = '96b582de-1fb2-45f7-baea-a366c55a082d';
const OVMF_SEV_ES_RESET_BLOCK_GUID = '00f771de-1a7e-4fcb-890e-68c77e2fb44e';

/**
 * The SEV-ES AP reset address OVMF publishes in the GUIDed table that ends 32 bytes before the end of its
 * image (entries are read backwards from the footer: data, then u16 length, then GUID).
 */
export function ovmfApResetAddress(ovmf: Uint8Array): number {
  const b = Buffer.from(ovmf.buffer, ovmf.byteOffset, ovmf.byteLength);
  if (b.length < 50) throw new RangeError('OVMF image too small for its GUIDed footer table');
  const footerGuidAt = b.length - 48;
  if (guidText(b.subarray(footerGuidAt, footerGuidAt + 16)) !== OVMF_TABLE_FOOTER_GUID)
    throw new RangeError('no OVMF GUIDed table footer 32 bytes before the end of the image');
  const tableLength = b.readUInt16LE(b.length - 50);
  const start = b.length - 32 - tableLength;
  if (tableLength < 18 || start < 0) throw new RangeError(`OVMF GUIDed table length ${tableLength} is invalid`);
  for (let end = b.length - 50; end > start; ) {
    if (end - 18 < start) throw new RangeError('OVMF GUIDed table entry runs past the table start');
    const guid = guidText(b.subarray(end - 16, end));
    const length = b.readUInt16LE(end - 18);
    if (length < 18 || end - length < start) throw new RangeError(`OVMF GUIDed table entry ${guid} has invalid length ${length}`);
    if (guid === OVMF_SEV_ES_RESET_BLOCK_GUID) return b.readUInt32LE(end - length);
    end -= length;
  }
  throw new RangeError('OVMF has no SEV-ES reset block (not an SEV-ES capable build)');
}
