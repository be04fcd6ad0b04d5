// The six bring-up steps of docs/TUTORIAL.md, run as a learner runs them: each a program of its own,
// whose exit status and key lines of output are what the tutorial tells the reader to look at.
// Steps 5 and 6 also run with their exercise's fault (a corrupt descriptor, a tampered guest), which
// must be refused. Step 4 boots Linux once, the only costly run.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const STEPS = new URL('../../examples/bring-up/', import.meta.url);

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function step(name: string, args: readonly string[] = [], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [fileURLToPath(new URL(`${name}.js`, STEPS)), ...args], { timeout: timeoutMs, maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      resolve({ status: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
    });
  });
}

function succeeded(run: Run): string {
  expect(run.status, `exit status; stderr: ${run.stderr}\nstdout: ${run.stdout}`).to.equal(0);
  return run.stdout;
}

describe('bring-up tutorial steps @kvm', function () {
  this.timeout(120_000);

  it('1: a real-mode guest writes a port, reads our answer, stores it and halts', async () => {
    const out = succeeded(await step('1-real-mode'));
    expect(out).to.match(/exit 1: I\/O out, port 0x10, 1 byte: the guest wrote 0x42/);
    expect(out).to.match(/exit 2: I\/O in, port 0x11, 1 byte: we answer 0x07/);
    expect(out).to.match(/exit 3: hlt at rip=0x100c/);
    expect(out).to.contain('guest memory at 0x8000: 0x08');
  });

  it('2: the guest writes and reads back a register of a device on the MMIO bus', async () => {
    const out = succeeded(await step('2-mmio'));
    expect(out).to.contain('device: guest writes 2 byte(s) at offset 0x0: 0x15 (VALUE)');
    expect(out).to.contain('device: guest reads 2 byte(s) at offset 0x4 -> 0x2a');
    expect(out).to.contain('the guest read back DOUBLE = 42');
  });

  it("3: 64-bit code runs on src/boot's GDT and page tables", async () => {
    const out = succeeded(await step('3-long-mode'));
    expect(out).to.match(/PD\[0\] at 0xb000 = 0x0000000000000083/);
    expect(out).to.contain('-> guest-physical 0x1000');
    expect(out).to.contain('wrote 0x1122334455667788 at 0x10000');
    expect(out).to.match(/the guest saw cr0=0x800000(11|31)/);
  });

  it('4: the Debian kernel boots to its first console line and its init powers off', async () => {
    const out = succeeded(await step('4-linux', [], 300_000));
    // Debian's kernel stamps each line with its time since boot.
    expect(out, out).to.match(/^first console line: (\[ *\d+\.\d+\] )?Linux version \d+\.\d+/m);
    expect(out).to.match(/zero page at 0x7000/);
    expect(out).to.contain('console: init: hello from user space');
    expect(out).to.contain('the run ended: guest-stopped (poweroff)');
  }).timeout(330_000);

  it('5: a hand-driven virtqueue: the device serves the chain and publishes it in the used ring', async () => {
    const out = succeeded(await step('5-virtio'));
    expect(out).to.contain('used ring at 0x10200: idx=1');
    expect(out).to.contain('ring[0] = { id: 0, len: 513 }');
    expect(out).to.contain('status byte: 0 (0 = VIRTIO_BLK_S_OK)');
    expect(out).to.contain('data: "hello from sector 0 of the disk"');
  });

  it('5, exercise: a descriptor outside guest RAM puts the device in DEVICE_NEEDS_RESET', async () => {
    const out = succeeded(await step('5-virtio', ['corrupt']));
    expect(out).to.contain('device: DEVICE_NEEDS_RESET');
    expect(out).to.contain('used ring at 0x10200: idx=0');
    expect(out).to.contain('the device refused the request');
  });

  it('6: the owner verifies the measurement and the guest reads back the secret', async () => {
    const out = succeeded(await step('6-sev-launch'));
    expect(out).to.contain('owner: measurement verified');
    expect(out).to.contain('secret injected at 0x5000: yes');
    const sent = /sends a 16-byte secret \(fingerprint ([0-9a-f]{16})\)/.exec(out)?.[1];
    expect(sent, out).to.be.a('string');
    expect(out).to.contain(`guest: read 16 bytes from its secret page (fingerprint ${sent})`);
    expect(out).to.contain("the guest read back the owner's secret: yes");
  });

  it('6, exercise: a guest changed after the prediction gets no secret', async () => {
    const out = succeeded(await step('6-sev-launch', ['tamper']));
    expect(out).to.contain('owner: measurement does not match the prediction');
    expect(out).to.contain('secret injected at 0x5000: no');
    expect(out).to.contain("the guest read back the owner's secret: no");
  });
});
