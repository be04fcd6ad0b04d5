// Runs inside the lab guest, started by its /init: executes the plan's commands one after another
// and streams their output and exit status to the host over the result serial port.
//   node guest-agent.js <plan.json> <result-device>
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { constants, openSync, readFileSync, writeSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { encodeRecord, type LabPlan, type LabRecord, type PlannedCommand } from './protocol.js';

/** Base64 grows data by 4/3; 3 KiB chunks keep each record line around 4 KiB. */
const CHUNK = 3072;

function openChannel(device: string): (record: LabRecord) => void {
  const fd = openSync(device, constants.O_WRONLY | constants.O_NOCTTY);
  return (record) => {
    const bytes = Buffer.from(encodeRecord(record));
    // A serial port accepts what fits in its buffer; writeSync returns short counts, never drops.
    for (let done = 0; done < bytes.length;) done += writeSync(fd, bytes, done);
  };
}

function runCommand(index: number, command: PlannedCommand, send: (record: LabRecord) => void): Promise<void> {
  return new Promise((resolve) => {
    send({ kind: 'start', index });
    const [program, ...args] = command.argv;
    // Node may emit 'close' after 'error' for a program that never started: one exit record only.
    let ended = false;
    const end = (status: number | null, signal: string | null): void => {
      if (ended) return;
      ended = true;
      send({ kind: 'exit', index, status, signal });
      resolve();
    };
    const cannotRun = (e: Error): void => {
      if (!ended) send({ kind: 'err', index, data: Buffer.from(`lab: cannot run ${program}: ${e.message}\n`) });
      end(127, null);
    };
    let child: ChildProcessByStdio<null, Readable, Readable>;
    try {
      child = spawn(program ?? '', args, { cwd: command.cwd, env: command.env, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      // spawn throws synchronously for some failures (E2BIG, a bad cwd type) and emits 'error' for others.
      cannotRun(e as Error);
      return;
    }
    const forward = (kind: 'out' | 'err') => (data: Buffer): void => {
      for (let at = 0; at < data.length; at += CHUNK) send({ kind, index, data: data.subarray(at, at + CHUNK) });
    };
    child.stdout.on('data', forward('out'));
    child.stderr.on('data', forward('err'));
    child.on('error', cannotRun);
    // 'close' (not 'exit') waits for both pipes to drain, so no output follows the exit record.
    child.on('close', end);
  });
}

async function main(): Promise<void> {
  const [planPath, device] = process.argv.slice(2);
  if (planPath === undefined || device === undefined) throw new Error('usage: guest-agent <plan.json> <result-device>');
  const send = openChannel(device);
  try {
    const plan = JSON.parse(readFileSync(planPath, 'utf8')) as LabPlan;
    for (const [index, command] of plan.commands.entries()) await runCommand(index, command, send);
    send({ kind: 'done' });
  } catch (e) {
    send({ kind: 'fail', message: e instanceof Error ? e.stack ?? e.message : String(e) });
  }
}

await main();
