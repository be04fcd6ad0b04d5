// Kernel ABI declarations. Every struct and ioctl number the project hands to the kernel is declared
// here-through, so one conformance test (test/abi.test.ts) can compile the real C headers with gcc and
// compare sizes, field offsets and ioctl values against what koffi computed.
import koffi from 'koffi';

export type CType = koffi.IKoffiCType;

export interface StructDecl {
  /** C spelling, e.g. `struct kvm_regs`. */
  readonly cName: string;
  /** Header that defines it, e.g. `linux/kvm.h`. */
  readonly header: string;
  readonly type: CType;
  /** Field names (C member designators, e.g. `cs` or `u.io`) whose offsets the ABI test checks. */
  readonly fields: readonly string[];
  readonly size: number;
}

export interface IoctlDecl {
  readonly name: string;
  readonly header: string;
  readonly value: number;
}

export interface ConstantDecl {
  readonly name: string;
  readonly header: string;
  readonly value: number;
}

const structRegistry: StructDecl[] = [];
const ioctlRegistry: IoctlDecl[] = [];
const constantRegistry: ConstantDecl[] = [];

export const registeredStructs = (): readonly StructDecl[] => structRegistry;
export const registeredIoctls = (): readonly IoctlDecl[] => ioctlRegistry;
export const registeredConstants = (): readonly ConstantDecl[] => constantRegistry;

/**
 * Declares a C struct (or union) with koffi, which applies the C layout rules, and registers it for
 * the ABI test. `koffiName` must be unique in the process (koffi types are global).
 */
export function cStruct(cName: string, header: string, fields: Record<string, string | CType>, options: { union?: boolean; packed?: boolean } = {}): StructDecl {
  const koffiName = cName.replace(/^(struct|union) /, '') + '_t';
  let type: CType;
  if (options.union) type = koffi.union(koffiName, fields);
  else if (options.packed) type = koffi.pack(koffiName, fields);
  else type = koffi.struct(koffiName, fields);
  const decl: StructDecl = { cName, header, type, fields: Object.keys(fields), size: koffi.sizeof(type) };
  structRegistry.push(decl);
  return decl;
}

/** Offset of a field of a declared struct, resolved once (hot paths keep the number). */
export function offsetOf(decl: StructDecl, field: string): number {
  return koffi.offsetof(decl.type, field);
}

export function encode<T extends object>(decl: StructDecl, value: T, into: Uint8Array = new Uint8Array(decl.size)): Uint8Array {
  koffi.encode(into, decl.type, value);
  return into;
}

export function decode<T>(decl: StructDecl, from: Uint8Array): T {
  return koffi.decode(from, decl.type) as T;
}

const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;

function ioc(dir: number, type: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}

export const _IO = (type: number, nr: number): number => ioc(IOC_NONE, type, nr, 0);
export const _IOR = (type: number, nr: number, size: number): number => ioc(IOC_READ, type, nr, size);
export const _IOW = (type: number, nr: number, size: number): number => ioc(IOC_WRITE, type, nr, size);
export const _IOWR = (type: number, nr: number, size: number): number => ioc(IOC_READ | IOC_WRITE, type, nr, size);

/** Registers an ioctl number under its C macro name and returns it. */
export function ioctl(name: string, header: string, value: number): number {
  ioctlRegistry.push({ name, header, value });
  return value;
}

/** Registers a kernel constant (exit reasons, flags) under its C name and returns it. */
export function constant(name: string, header: string, value: number): number {
  constantRegistry.push({ name, header, value });
  return value;
}
