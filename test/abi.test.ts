// ABI conformance: every struct, ioctl number and constant any module declares through src/kvm/abi.ts
// is checked against the C headers by compiling a probe with gcc. Every module under dist/src that
// imports abi.js is loaded, so declarations added anywhere are covered without listing them here
// (modules that cannot declare anything are not imported: some are scripts that run on import).
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { registeredConstants, registeredIoctls, registeredStructs, type ConstantDecl, type IoctlDecl, type StructDecl } from '../src/sys/abi.js';
import { errorMessage } from '../src/sys/error-message.js';

const distSrc = join(dirname(fileURLToPath(import.meta.url)), '..', 'src');

function modulesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return modulesUnder(path);
    return e.name.endsWith('.js') ? [path] : [];
  });
}

const importsAbi = /from ['"][^'"]*\/abi\.js['"]/;
const declaringModules = modulesUnder(distSrc).filter((m) => importsAbi.test(readFileSync(m, 'utf8')));

const importFailures: string[] = [];
for (const module of declaringModules) {
  try {
    await import(pathToFileURL(module).href);
  } catch (e) {
    importFailures.push(`${module}: ${errorMessage(e)}`);
  }
}

/** What the C compiler says: `size <struct>`, `offset <struct>.<member>`, `value <macro>`. */
type Measured = Map<string, bigint>;

function probeSource(structs: readonly StructDecl[], ioctls: readonly IoctlDecl[], constants: readonly ConstantDecl[]): string {
  const headers = new Set([...structs, ...ioctls, ...constants].map((d) => d.header));
  const lines = ['#include <stddef.h>', '#include <stdio.h>', ...[...headers].sort().map((h) => `#include <${h}>`), 'int main(void) {'];
  for (const s of structs) {
    lines.push(`  printf("size\\t${s.cName}\\t%zu\\n", sizeof(${s.cName}));`);
    for (const f of s.fields) lines.push(`  printf("offset\\t${s.cName}.${f}\\t%zu\\n", offsetof(${s.cName}, ${f}));`);
  }
  for (const d of [...ioctls, ...constants]) lines.push(`  printf("value\\t${d.name}\\t%llu\\n", (unsigned long long)(${d.name}));`);
  lines.push('  return 0;', '}');
  return lines.join('\n');
}

function measure(source: string): Measured {
  const dir = mkdtempSync(join(tmpdir(), 'ts-vmm-abi-'));
  try {
    writeFileSync(join(dir, 'probe.c'), source);
    execFileSync('gcc', ['-std=gnu11', '-Wall', '-o', join(dir, 'probe'), join(dir, 'probe.c')], { stdio: ['ignore', 'ignore', 'pipe'] });
    const out = execFileSync(join(dir, 'probe'), { encoding: 'utf8' });
    return new Map(
      out
        .trim()
        .split('\n')
        .map((line) => {
          const [kind, name, value] = line.split('\t');
          return [`${kind} ${name}`, BigInt(value!)];
        }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Every way the declarations disagree with the compiler, as readable lines (empty when they agree). */
function mismatches(structs: readonly StructDecl[], ioctls: readonly IoctlDecl[], constants: readonly ConstantDecl[], measured: Measured): string[] {
  const out: string[] = [];
  const compare = (key: string, declared: number, what: string) => {
    const actual = measured.get(key);
    if (actual === undefined) out.push(`${what}: not measured`);
    else if (actual !== BigInt.asUintN(64, BigInt(declared))) out.push(`${what}: declared ${declared}, C says ${actual}`);
  };
  for (const s of structs) {
    compare(`size ${s.cName}`, s.size, `sizeof(${s.cName})`);
    for (const f of s.fields) compare(`offset ${s.cName}.${f}`, s.offsets.get(f)!, `offsetof(${s.cName}, ${f})`);
  }
  for (const d of [...ioctls, ...constants]) compare(`value ${d.name}`, d.value, d.name);
  return out;
}

function conflictingDuplicates(decls: readonly { name: string; value: number }[]): string[] {
  const seen = new Map<string, number>();
  const out: string[] = [];
  for (const { name, value } of decls) {
    const prior = seen.get(name);
    if (prior !== undefined && prior !== value) out.push(`${name} declared as both ${prior} and ${value}`);
    seen.set(name, value);
  }
  return out;
}

describe('kernel ABI conformance (gcc against the system headers)', () => {
  const structs = registeredStructs();
  const ioctls = registeredIoctls();
  const constants = registeredConstants();
  let measured: Measured;

  before(function () {
    this.timeout(60_000);
    measured = measure(probeSource(structs, ioctls, constants));
  });

  it('imports every module under dist/src that uses abi.js', () => {
    expect(declaringModules.length).to.be.greaterThan(5);
    expect(importFailures).to.deep.equal([]);
  });

  it('finds the KVM declarations (discovery works)', () => {
    expect(structs.map((s) => s.cName)).to.include.members(['struct kvm_run', 'struct kvm_sregs', 'struct kvm_regs']);
    expect(ioctls.map((i) => i.name)).to.include('KVM_RUN');
    expect(structs.find((s) => s.cName === 'struct kvm_run')!.fields).to.include.members(['io.port', 'mmio.data', 'system_event.type']);
  });

  it('has no name declared twice with different values', () => {
    expect(conflictingDuplicates([...ioctls, ...constants])).to.deep.equal([]);
  });

  it('detects a drifted layout, size and value', () => {
    const real = structs.find((s) => s.cName === 'struct kvm_regs')!;
    const drifted: StructDecl = { ...real, size: real.size + 8, offsets: new Map([...real.offsets].map(([f, o]) => [f, f === 'rip' ? o + 8 : o])) };
    const wrongIoctl: IoctlDecl = { name: 'KVM_RUN', header: 'linux/kvm.h', value: 0xae81 };
    expect(mismatches([drifted], [wrongIoctl], [], measured)).to.deep.equal([
      `sizeof(struct kvm_regs): declared ${real.size + 8}, C says ${real.size}`,
      `offsetof(struct kvm_regs, rip): declared ${real.offsets.get('rip')! + 8}, C says ${real.offsets.get('rip')}`,
      `KVM_RUN: declared ${0xae81}, C says ${0xae80}`,
    ]);
  });

  for (const s of structs) {
    it(`${s.cName}: size and ${s.fields.length} member offsets (${s.header})`, () => {
      expect(mismatches([s], [], [], measured)).to.deep.equal([]);
    });
  }

  it(`${ioctls.length} ioctl numbers`, () => {
    expect(mismatches([], ioctls, [], measured)).to.deep.equal([]);
  });

  it(`${constants.length} constants`, () => {
    expect(mismatches([], [], constants, measured)).to.deep.equal([]);
  });
});
