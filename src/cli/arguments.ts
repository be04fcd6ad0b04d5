// Parsers for command-line values, shared by the subcommands; each rejects with commander's
// InvalidArgumentError, which names the option and the value.
import { InvalidArgumentError } from 'commander';
import { decodePolicy } from '../sev/policy.js';
import { errorMessage } from '../sys/error-message.js';

export function positiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`'${value}' is not a positive integer`);
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
