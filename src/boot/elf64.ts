// ELF64 little-endian file and program headers, laid out as <elf.h> has them (the ABI test checks
// both structs), read with every offset and size checked against the bytes at hand. The kernel loader
// takes the PT_LOAD segments of a vmlinux; the lab finds a host program's dynamic loader (PT_INTERP).
import { koffi } from '../sys/koffi.js';
import { cStruct, constant, offsetOf } from '../sys/abi.js';

const ELF = 'elf.h';
export const elf64Ehdr = cStruct('Elf64_Ehdr', ELF, {
  e_ident: koffi.array('uint8', 16),
  e_type: 'uint16',
  e_machine: 'uint16',
  e_version: 'uint32',
  e_entry: 'uint64',
  e_phoff: 'uint64',
  e_shoff: 'uint64',
  e_flags: 'uint32',
  e_ehsize: 'uint16',
  e_phentsize: 'uint16',
  e_phnum: 'uint16',
  e_shentsize: 'uint16',
  e_shnum: 'uint16',
  e_shstrndx: 'uint16',
});
export const elf64Phdr = cStruct('Elf64_Phdr', ELF, {
  p_type: 'uint32',
  p_flags: 'uint32',
  p_offset: 'uint64',
  p_vaddr: 'uint64',
  p_paddr: 'uint64',
  p_filesz: 'uint64',
  p_memsz: 'uint64',
  p_align: 'uint64',
});
export const ELFCLASS64 = constant('ELFCLASS64', ELF, 2);
export const ELFDATA2LSB = constant('ELFDATA2LSB', ELF, 1);
export const EI_CLASS = constant('EI_CLASS', ELF, 4);
export const EI_DATA = constant('EI_DATA', ELF, 5);
export const EM_X86_64 = constant('EM_X86_64', ELF, 62);
export const PT_LOAD = constant('PT_LOAD', ELF, 1);
export const PT_INTERP = constant('PT_INTERP', ELF, 3);

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];

export class ElfError extends Error {
  override readonly name = 'ElfError';
}

export interface ProgramHeader {
  type: number;
  /** Where the segment's bytes start in the file. */
  offset: number;
  paddr: number;
  filesz: number;
  memsz: number;
}

export interface Elf64Headers {
  machine: number;
  entry: number;
  programHeaders: ProgramHeader[];
}

/** Whether `bytes` start with the ELF magic. */
export function isElf(bytes: Uint8Array): boolean {
  return bytes.length >= ELF_MAGIC.length && ELF_MAGIC.every((b, i) => bytes[i] === b);
}

/**
 * Reads the file header and the program header table from `bytes`, which must hold the file from its
 * start at least to the end of that table. `what` names the file in errors.
 */
export function readElf64Headers(bytes: Uint8Array, what: string): Elf64Headers {
  if (!isElf(bytes)) throw new ElfError(`${what} is not an ELF file`);
  if (bytes.length < elf64Ehdr.size) throw new ElfError(`${what} truncated inside its header (${bytes.length} bytes)`);
  if (bytes[EI_CLASS] !== ELFCLASS64 || bytes[EI_DATA] !== ELFDATA2LSB) throw new ElfError(`${what} is not 64-bit little-endian`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u16 = (at: number, field: string) => view.getUint16(at + offsetOf(elf64Ehdr, field), true);
  const u64 = (at: number, decl: typeof elf64Ehdr, field: string, name: string): number => {
    const v = view.getBigUint64(at + offsetOf(decl, field), true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ElfError(`${what} ${name} 0x${v.toString(16)} is out of range`);
    return Number(v);
  };
  const entry = u64(0, elf64Ehdr, 'e_entry', 'entry point');
  const phoff = u64(0, elf64Ehdr, 'e_phoff', 'program header offset');
  const phentsize = u16(0, 'e_phentsize');
  const phnum = u16(0, 'e_phnum');
  if (phnum > 0 && phentsize < elf64Phdr.size) throw new ElfError(`${what} program header size ${phentsize} is too small`);
  if (phoff + phnum * phentsize > bytes.length) throw new ElfError(`${what} truncated inside its program headers`);
  const programHeaders = Array.from({ length: phnum }, (_, i): ProgramHeader => {
    const at = phoff + i * phentsize;
    return {
      type: view.getUint32(at + offsetOf(elf64Phdr, 'p_type'), true),
      offset: u64(at, elf64Phdr, 'p_offset', 'segment offset'),
      paddr: u64(at, elf64Phdr, 'p_paddr', 'segment physical address'),
      filesz: u64(at, elf64Phdr, 'p_filesz', 'segment file size'),
      memsz: u64(at, elf64Phdr, 'p_memsz', 'segment memory size'),
    };
  });
  return { machine: u16(0, 'e_machine'), entry, programHeaders };
}
