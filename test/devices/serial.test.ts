import { expect } from 'chai';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { SERIAL_INPUT_LIMIT, SERIAL_MODULE, SERIAL_OUTPUT_RING, Serial16550 } from '../../src/devices/serial.js';
import { EventFd } from '../../src/sys/eventfd.js';

const THR = 0,
  IER = 1,
  IIR = 2,
  FCR = 2,
  LCR = 3,
  MCR = 4,
  LSR = 5,
  MSR = 6,
  SCR = 7;

function uart() {
  const out: number[] = [];
  let interrupts = 0;
  const serial = new Serial16550({
    trigger: () => {
      interrupts++;
    },
  });
  const r = (offset: number): number => {
    const d = new Uint8Array(1);
    serial.read(offset, d);
    return d[0]!;
  };
  const w = (offset: number, value: number): void => {
    serial.write(offset, Uint8Array.of(value));
    out.push(...serial.takeOutput());
  };
  return { serial, out, r, w, interrupts: () => interrupts };
}

describe('16550A UART', () => {
  it('passes the 8250 driver autoconfig: IER scratch test, loopback test, FIFO detection as 16550A', () => {
    const { r, w } = uart();
    // serial8250 autoconfig: IER keeps only its low nibble.
    w(IER, 0);
    expect(r(IER) & 0x0f).to.equal(0);
    w(IER, 0x0f);
    expect(r(IER) & 0x0f).to.equal(0x0f);
    w(IER, 0xff);
    expect(r(IER)).to.equal(0x0f, 'bits 4-7 (UUE and friends) must read 0 or the chip looks like an XScale');
    w(IER, 0);
    // Loopback with OUT2|RTS reports DCD|CTS.
    w(MCR, 0x10 | 0x0a);
    expect(r(MSR) & 0xf0).to.equal(0x90);
    w(MCR, 0);
    // FIFO enabled: IIR bits 7:6 read 11 (16550A).
    w(FCR, 0x01);
    expect(r(IIR) >> 6).to.equal(3);
    // Not a TI16750: bit 5 never sets, with or without DLAB.
    w(FCR, 0x21);
    expect((r(IIR) >> 5) & 1).to.equal(0);
    w(LCR, 0x80);
    w(FCR, 0x21);
    expect((r(IIR) >> 5) & 1).to.equal(0);
  });

  it('re-asserts THRE when the interrupt is enabled again, as serial8250_do_startup tests', () => {
    const { r, w, interrupts } = uart();
    w(IER, 0x02);
    expect(r(IIR) & 0x0f).to.equal(0x02, 'THRE pending as soon as THRI is enabled');
    expect(r(IIR) & 0x01).to.equal(1, 'reading IIR acknowledged THRE');
    w(IER, 0);
    w(IER, 0x02);
    expect(r(IIR) & 0x0f).to.equal(0x02);
    expect(interrupts()).to.equal(2);
  });

  it('transmits to the output and raises THRE after each byte', () => {
    const { r, w, out, interrupts } = uart();
    w(IER, 0x02);
    r(IIR);
    const before = interrupts();
    for (const c of 'hi') w(THR, c.charCodeAt(0));
    expect(Buffer.from(out).toString()).to.equal('hi');
    expect(r(LSR) & 0x60).to.equal(0x60);
    expect(interrupts()).to.equal(before + 1, 'one edge while the line stays high');
    expect(r(IIR) & 0x0f).to.equal(0x02);
  });

  it('receives host input with RDA interrupts ahead of THRE, and LSR.DR until drained', () => {
    const { serial, r, w, interrupts } = uart();
    w(IER, 0x01);
    serial.enqueueInput(Buffer.from('ab'));
    expect(interrupts()).to.equal(1);
    w(IER, 0x03);
    expect(r(IIR) & 0x0f).to.equal(0x04, 'received data outranks THRE');
    expect(r(LSR) & 1).to.equal(1);
    expect(String.fromCharCode(r(THR), r(THR))).to.equal('ab');
    expect(r(LSR) & 1).to.equal(0);
    expect(r(IIR) & 0x0f).to.equal(0x02);
  });

  it('keeps the divisor latch apart from the data registers', () => {
    const { r, w, out } = uart();
    w(LCR, 0x83);
    w(0, 0x01);
    w(1, 0x00);
    expect(r(0)).to.equal(1);
    expect(out).to.have.length(0, 'a divisor write is not a transmitted byte');
    w(LCR, 0x03);
    expect(r(IER)).to.equal(0);
    w(SCR, 0x5a);
    expect(r(SCR)).to.equal(0x5a);
  });

  it('loops transmitted bytes back to the receiver in loopback mode', () => {
    const { r, w, out } = uart();
    w(MCR, 0x10);
    w(THR, 0x42);
    expect(out).to.have.length(0);
    expect(r(LSR) & 1).to.equal(1);
    expect(r(THR)).to.equal(0x42);
  });

  it('reports an overrun (and drops input) beyond its input limit, then clears it on an LSR read', () => {
    const { serial, r } = uart();
    serial.enqueueInput(new Uint8Array(SERIAL_INPUT_LIMIT + 10));
    expect(r(LSR) & 0x02).to.equal(0x02);
    expect(r(LSR) & 0x02).to.equal(0);
    let n = 0;
    while (r(LSR) & 1) {
      r(THR);
      n++;
    }
    expect(n).to.equal(SERIAL_INPUT_LIMIT);
  });

  it('clears the receive FIFO on FCR bit 1', () => {
    const { serial, r, w } = uart();
    serial.enqueueInput(Buffer.from('xyz'));
    w(FCR, 0x03);
    expect(r(LSR) & 1).to.equal(0);
  });

  describe('shared between threads', () => {
    it('is one UART seen from two views of its state, as two vCPU threads see it', () => {
      const first = uart();
      const second = new Serial16550({ trigger: () => undefined }, first.serial.state);
      first.w(IER, 0x05);
      const d = new Uint8Array(1);
      second.read(IER, d);
      expect(d[0]).to.equal(0x05);
      first.w(THR, 0x61);
      second.write(THR, Uint8Array.of(0x62));
      expect(Buffer.from(first.serial.takeOutput()).toString()).to.equal('b', 'the first byte was taken by the first view');
      first.serial.enqueueInput(Buffer.from('z'));
      second.read(THR, d);
      expect(String.fromCharCode(d[0]!)).to.equal('z');
    });

    it('drops a byte only after the ring stayed full, and never blocks the transmitting thread for good', () => {
      const { serial } = uart();
      for (let i = 0; i < SERIAL_OUTPUT_RING + 2; i++) serial.write(THR, Uint8Array.of(i & 0xff));
      expect(serial.droppedOutput).to.equal(2);
      const taken = serial.takeOutput();
      expect(taken.length).to.equal(SERIAL_OUTPUT_RING);
      expect(taken[SERIAL_OUTPUT_RING - 1]).to.equal((SERIAL_OUTPUT_RING - 1) & 0xff);
      serial.write(THR, Uint8Array.of(0x21));
      expect([...serial.takeOutput()]).to.deep.equal([0x21], 'room again once taken');
    });

    it('carries every byte a vCPU thread transmits to the watching thread, in order, with its interrupts', async () => {
      const irq = new EventFd();
      const received: number[] = [];
      const serial = new Serial16550({ trigger: () => irq.signal() });
      const watch = serial.watchOutput((bytes) => received.push(...bytes));
      const total = 3 * SERIAL_OUTPUT_RING;
      // The vCPU side, in a thread of its own as the VMM builds it: IER's THRI on, then a stream of bytes.
      const worker = new Worker(
        `const { workerData } = require('node:worker_threads');
         import(workerData.module).then(({ localSerial }) => {
           const uart = localSerial({ options: workerData.options });
           uart.write(1, Uint8Array.of(0x02));
           for (let i = 0; i < workerData.total; i++) uart.write(0, Uint8Array.of(i % 251));
         });`,
        { eval: true, workerData: { module: SERIAL_MODULE, options: { state: serial.state, interruptFd: irq.fd }, total } },
      );
      const [code] = await once(worker, 'exit');
      watch.stop();
      expect(code).to.equal(0);
      expect(serial.droppedOutput).to.equal(0);
      expect(received.length).to.equal(total);
      expect(received.every((b, i) => b === i % 251)).to.equal(true, 'bytes out of order');
      expect(irq.take() > 0n).to.equal(true, 'THRE raised through the eventfd');
      irq.close();
    });
  });
});
