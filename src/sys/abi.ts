// Kernel ABI declarations. Every struct and ioctl number the project hands to the kernel is declared
// here-through, so one conformance test (test/abi.test.ts) can compile the real C headers with gcc and
// compare sizes, field offsets and ioctl values against what koffi computed.
import type { IKoffiCType } from 'koffi';
import { koffi } from './koffi.js';

export type CType = IKoffiCType;

export interface StructDecl {
  /** C spelling, e.g. `struct kvm_regs`. */
  readonly cName: string;
  /** Header that defines it, e.g. `linux/kvm.h`. */
  readonly header: string;
  readonly type: CType;
  /** C member designators (e.g. `cs`, `cs.base`, `io.port`) whose offsets the ABI test checks. */
  readonly fields: readonly string[];
  /** Byte offset of every designator in `fields`, nested members included. */
  readonly offsets: ReadonlyMap<string, number>;
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

export interface StructOptions {
  union?: boolean;
  packed?: boolean;
  /**
   * Members that are anonymous in C (an unnamed union inside `struct kvm_run`). koffi needs a name
   * for them; their own members are designated without it, as C does.
   */
  anonymous?: readonly string[];
}

/**
 * Declares a C struct (or union) with koffi, which applies the C layout rules, and registers it for
 * the ABI test. `koffiName` must be unique in the process (koffi types are global).
 */
export function cStruct(cName: string, header: string, fields: Record<string, string | CType>, options: StructOptions = {}): StructDecl {
  const koffiName = `${cName.replace(/^(struct|union) /, '')}_t`;
  let type: CType;
  if (options.union) type = koffi.union(koffiName, fields);
  else if (options.packed) type = koffi.pack(koffiName, fields);
  else type = koffi.struct(koffiName, fields);
  const offsets = new Map<string, number>();
  collectOffsets(type, '', 0, new Set(options.anonymous ?? []), offsets);
  const decl: StructDecl = { cName, header, type, fields: [...offsets.keys()], offsets, size: koffi.sizeof(type) };
  structRegistry.push(decl);
  return decl;
}

interface Member {
  name: string;
  type: CType;
  offset: number;
}
interface TypeInfo {
  primitive: string;
  size: number;
  length?: number;
  ref?: CType;
  members?: Record<string, Member>;
}
const introspect = (type: CType): TypeInfo => koffi.introspect(type) as unknown as TypeInfo;
const isAggregate = (info: TypeInfo): boolean => info.primitive === 'Record' || info.primitive === 'Union';

function collectOffsets(type: CType, prefix: string, base: number, anonymous: ReadonlySet<string>, into: Map<string, number>): void {
  for (const member of Object.values(introspect(type).members ?? {})) {
    const isAnonymous = prefix === '' && anonymous.has(member.name);
    const designator = isAnonymous ? prefix : prefix + member.name;
    const offset = base + member.offset;
    if (!isAnonymous) into.set(designator, offset);
    if (isAggregate(introspect(member.type))) {
      collectOffsets(member.type, isAnonymous ? prefix : `${designator}.`, offset, anonymous, into);
    }
  }
}

/** Offset of a member (a C designator such as `io.port`), resolved once: hot paths keep the number. */
export function offsetOf(decl: StructDecl, field: string): number {
  const offset = decl.offsets.get(field);
  if (offset === undefined) throw new Error(`${decl.cName} has no member ${field}`);
  return offset;
}

export function encode<T extends object>(decl: StructDecl, value: T, into: Uint8Array = new Uint8Array(decl.size)): Uint8Array {
  koffi.encode(into, decl.type, value);
  return into;
}

export function decode<T>(decl: StructDecl, from: Uint8Array): T {
  return koffi.decode(from, decl.type) as T;
}

/**
 * A plain value of a declared struct, read with fixed types: 64-bit integers are always bigint (koffi's
 * own decode gives a number when the value happens to fit), byte arrays are Uint8Array copies, other
 * arrays are arrays, and every member of a union is read.
 */
export function decodeExact<T>(decl: StructDecl, from: Uint8Array): T {
  if (from.length < decl.size) throw new RangeError(`${decl.cName} needs ${decl.size} bytes, got ${from.length}`);
  return readValue(decl.type, new DataView(from.buffer, from.byteOffset, from.byteLength), 0) as T;
}

/** Writes `value` over `into` (zero-filled first): members left out are zero, as C designated initialisers. */
export function encodeExact(decl: StructDecl, value: object, into: Uint8Array = new Uint8Array(decl.size)): Uint8Array {
  if (into.length < decl.size) throw new RangeError(`${decl.cName} needs ${decl.size} bytes, got ${into.length}`);
  into.fill(0, 0, decl.size);
  writeValue(decl.type, new DataView(into.buffer, into.byteOffset, into.byteLength), 0, value, decl.cName);
  return into;
}

type Scalar = { get: (v: DataView, o: number) => number | bigint; set: (v: DataView, o: number, x: number | bigint) => void };
const scalars: Record<string, Scalar> = {
  Int8: { get: (v, o) => v.getInt8(o), set: (v, o, x) => v.setInt8(o, Number(x)) },
  UInt8: { get: (v, o) => v.getUint8(o), set: (v, o, x) => v.setUint8(o, Number(x)) },
  Int16: { get: (v, o) => v.getInt16(o, true), set: (v, o, x) => v.setInt16(o, Number(x), true) },
  UInt16: { get: (v, o) => v.getUint16(o, true), set: (v, o, x) => v.setUint16(o, Number(x), true) },
  Int32: { get: (v, o) => v.getInt32(o, true), set: (v, o, x) => v.setInt32(o, Number(x), true) },
  UInt32: { get: (v, o) => v.getUint32(o, true), set: (v, o, x) => v.setUint32(o, Number(x), true) },
  Int64: { get: (v, o) => v.getBigInt64(o, true), set: (v, o, x) => v.setBigInt64(o, BigInt(x), true) },
  UInt64: { get: (v, o) => v.getBigUint64(o, true), set: (v, o, x) => v.setBigUint64(o, BigInt(x), true) },
};
scalars.Char = scalars.Int8!;
scalars.UChar = scalars.UInt8!;

function scalar(info: TypeInfo): Scalar {
  const s = scalars[info.primitive];
  if (!s) throw new Error(`no exact codec for koffi primitive ${info.primitive}`);
  return s;
}

function readValue(type: CType, view: DataView, offset: number): unknown {
  const info = introspect(type);
  if (isAggregate(info)) {
    const out: Record<string, unknown> = {};
    for (const m of Object.values(info.members ?? {})) out[m.name] = readValue(m.type, view, offset + m.offset);
    return out;
  }
  if (info.primitive === 'Array') {
    const element = introspect(info.ref!);
    const length = info.length!;
    if (element.size === 1 && !isAggregate(element)) return new Uint8Array(view.buffer.slice(view.byteOffset + offset, view.byteOffset + offset + length));
    return Array.from({ length }, (_, i) => readValue(info.ref!, view, offset + i * element.size));
  }
  return scalar(info).get(view, offset);
}

function writeValue(type: CType, view: DataView, offset: number, value: unknown, path: string): void {
  const info = introspect(type);
  if (isAggregate(info)) {
    if (typeof value !== 'object' || value === null) throw new TypeError(`${path}: expected an object`);
    for (const m of Object.values(info.members ?? {})) {
      const v = (value as Record<string, unknown>)[m.name];
      if (v !== undefined) writeValue(m.type, view, offset + m.offset, v, `${path}.${m.name}`);
    }
    return;
  }
  if (info.primitive === 'Array') {
    const element = introspect(info.ref!);
    const items = value as ArrayLike<unknown>;
    if (typeof items !== 'object' || items === null || typeof items.length !== 'number') throw new TypeError(`${path}: expected an array`);
    if (items.length > info.length!) throw new RangeError(`${path}: ${items.length} elements do not fit in ${info.length}`);
    for (let i = 0; i < items.length; i++) writeValue(info.ref!, view, offset + i * element.size, items[i], `${path}[${i}]`);
    return;
  }
  if (typeof value !== 'number' && typeof value !== 'bigint') throw new TypeError(`${path}: expected a number or bigint`);
  scalar(info).set(view, offset, value);
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
