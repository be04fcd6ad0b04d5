// Parsers for command-line values, shared by the subcommands; each rejects with commander's
// InvalidArgumentError, which names the option and the value.
import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from 'commander';
import { MAX_CPUS } from '../boot/acpi/tables.js';
import { maxGuestMemoryMiB, MIN_GUEST_MEMORY_MIB } from '../boot/layout.js';
import { decodePolicy } from '../sev/policy.js';
import { errorMessage } from '../sys/error-message.js';

export function positiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`'${value}' is not a positive integer`);
  return n;
}

/** A vCPU count the machine can describe to the guest, checked before anything starts per vCPU. */
export function vcpuCount(value: string): number {
  const n = positiveInteger(value);
  if (n > MAX_CPUS) throw new InvalidArgumentError(`${n} vCPUs is more than the ${MAX_CPUS} supported`);
  return n;
}

/** Guest RAM in MiB that the memory layout can hold. */
export function memoryMiB(value: string): number {
  const n = positiveInteger(value);
  const max = maxGuestMemoryMiB();
  if (n < MIN_GUEST_MEMORY_MIB || n > max) throw new InvalidArgumentError(`${n} MiB is outside ${MIN_GUEST_MEMORY_MIB}..${max} MiB`);
  return n;
}

/** sevctl's numbers: decimal or 0x-hex. */
export function hexOrInt(value: string): number {
  const n = /^0x[0-9a-f]+$/i.test(value) ? Number.parseInt(value.slice(2), 16) : /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`'${value}' is not a decimal or 0x-hex number`);
  return n;
}

/** An SEV guest policy word, checked for reserved bits. */
export function policyArg(value: string): number {
  const policy = hexOrInt(value);
  try {
    decodePolicy(policy);
  } catch (e) {
    throw new InvalidArgumentError(errorMessage(e));
  }
  return policy;
}

/** A secret kept in a file: its content, without one trailing newline (as `echo` leaves it). */
export function secretFile(file: string, what: string): string {
  const text = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  if (text.length === 0) throw new Error(`${what} ${file} is empty`);
  return text;
}
