import { expect } from 'chai';
import { AcpiSleepRegisters } from '../../src/devices/acpi-sleep.js';
import { I8042 } from '../../src/devices/i8042.js';
import type { GuestStopRequest } from '../../src/devices/platform-events.js';

function recorder() {
  const requests: GuestStopRequest[] = [];
  return {
    requests,
    sink: (r: GuestStopRequest) => {
      requests.push(r);
    },
  };
}

describe('i8042 keyboard controller', () => {
  it('turns command 0xfe on port 0x64 into a reset request', () => {
    const { requests, sink } = recorder();
    const kbc = new I8042(sink);
    kbc.write(4, Uint8Array.of(0xaa));
    expect(requests).to.deep.equal([]);
    kbc.write(4, Uint8Array.of(0xfe));
    expect(requests).to.deep.equal(['reset']);
  });

  it('answers the self test and keeps the input buffer empty so reset loops do not wait', () => {
    const kbc = new I8042(() => undefined);
    const status = new Uint8Array(1);
    kbc.read(4, status);
    expect(status[0]! & 0x02).to.equal(0);
    kbc.write(4, Uint8Array.of(0xaa));
    kbc.read(4, status);
    expect(status[0]! & 0x01).to.equal(1);
    const data = new Uint8Array(1);
    kbc.read(0, data);
    expect(data[0]).to.equal(0x55);
    kbc.read(4, status);
    expect(status[0]! & 0x01).to.equal(0);
  });

  it('stores the command byte written after 0x60 and returns it for 0x20', () => {
    const kbc = new I8042(() => undefined);
    kbc.write(4, Uint8Array.of(0x60));
    kbc.write(0, Uint8Array.of(0x45));
    kbc.write(4, Uint8Array.of(0x20));
    const data = new Uint8Array(1);
    kbc.read(0, data);
    expect(data[0]).to.equal(0x45);
  });
});

describe('ACPI sleep registers', () => {
  it('powers off on SLP_EN with the S5 sleep type only', () => {
    const { requests, sink } = recorder();
    const regs = new AcpiSleepRegisters(5, sink);
    regs.write(0, Uint8Array.of(5 << 2));
    regs.write(0, Uint8Array.of((3 << 2) | 0x20));
    regs.write(1, Uint8Array.of((5 << 2) | 0x20));
    expect(requests).to.deep.equal([]);
    regs.write(0, Uint8Array.of((5 << 2) | 0x20));
    expect(requests).to.deep.equal(['poweroff']);
  });
});
