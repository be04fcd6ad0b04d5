import { expect } from 'chai';
import { Bus, type BusDevice } from '../../src/devices/bus.js';
import { VcpuThreads } from '../../src/kvm/vcpu-threads.js';
import type { VcpuStop } from '../../src/kvm/types.js';
import { realModeVm } from './real-mode-vm.js';
import { RecordingDevice } from './recording-device.js';

const ENTRY = 0x1000;
const SPIN = [0xeb, 0xfe]; // jmp $
const COUNT = [0x66, 0xff, 0x06, 0x00, 0x80, 0xeb, 0xf9]; // l: inc dword [0x8000] ; jmp l

const buses = () => ({ pio: new Bus('pio'), mmio: new Bus('mmio') });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('vCPU threads @kvm', () => {
  it('kicks vCPUs spinning in the guest out of KVM_RUN while the event loop stays free', async () => {
    const guest = realModeVm(COUNT, { entry: ENTRY, vcpus: 2 });
    const counter = () => guest.memory.readU32(0x8000);
    const threads = new VcpuThreads(guest.vcpus, buses());
    const seen: VcpuStop[] = [];
    threads.onStop((s) => seen.push(s));
    threads.start();
    while (counter() === 0) await sleep(5);
    // While the guest counts, the main thread's timer must fire again and again: counted, not timed, so a
    // loaded host (the lab under TCG) takes longer but passes, and a blocked event loop never gets past it.
    const before = counter();
    await new Promise<void>((resolve) => {
      let ticks = 0;
      const timer = setInterval(() => {
        if (++ticks < 20) return;
        clearInterval(timer);
        resolve();
      }, 5);
    });
    expect(counter(), 'the guest kept running meanwhile').to.be.greaterThan(before);
    expect(seen, 'nothing stops a spinning guest by itself').to.deep.equal([]);

    const stops = await threads.stop();
    expect(stops.map((s) => [s.vcpu, s.reason])).to.deep.equal([
      [0, 'stopped'],
      [1, 'stopped'],
    ]);
    for (const stop of stops) expect(stop.regs!.rip, 'stopped inside the loop').to.be.oneOf([BigInt(ENTRY), BigInt(ENTRY + 5)]);
    expect(seen.map((s) => s.vcpu).sort()).to.deep.equal([0, 1]);
    guest.close();
  });

  it('serves several vCPUs doing I/O at once, losing and duplicating nothing', async () => {
    // l: out 0x10, al ; in al, 0x11 ; dec cx ; jnz l ; hlt
    const guest = realModeVm([0xe6, 0x10, 0xe4, 0x11, 0x49, 0x75, 0xf9, 0xf4], { entry: ENTRY, vcpus: 2 });
    const ITERATIONS = 2000;
    for (const vcpu of guest.vcpus) vcpu.setRegs({ ...vcpu.getRegs(), rcx: BigInt(ITERATIONS) });
    let writes = 0;
    let reads = 0;
    const b = buses();
    b.pio.insert(
      {
        read: (_o, data) => {
          reads++;
          data[0] = 0;
        },
        write: () => {
          writes++;
        },
      },
      0x10,
      2,
      'counter',
    );
    const threads = new VcpuThreads(guest.vcpus, b);
    threads.start();
    const stops = await threads.stopped;
    expect(stops.map((s) => s.reason)).to.deep.equal(['hlt', 'hlt']);
    expect([writes, reads]).to.deep.equal([2 * ITERATIONS, 2 * ITERATIONS]);
    guest.close();
  });

  it("applies port writes of two vCPUs taking turns under a guest lock in the guest's order", async () => {
    // bx = vCPU id; lock word at 0x8000, turn counter at 0x8004. Each vCPU takes the lock (xchg), and on
    // its turn writes the counter to port 0x10 (posted), counts on and releases the lock:
    // top: mov ax,1; xchg ax,[0x8000]; test ax,ax; jnz top; mov eax,[0x8004]; cmp eax,300; jae finish
    //      mov edx,eax; and dx,1; cmp dx,bx; jne release; out 0x10,eax; inc eax; mov [0x8004],eax
    // release: mov word [0x8000],0; jmp top     finish: mov word [0x8000],0; hlt
    // Few turns: with one lab CPU each turn waits for the other vCPU's thread to be scheduled. The
    // mailbox test drives many more turns between threads on the host.
    const TURNS = 300;
    const guest = realModeVm(
      [
        0xb8, 0x01, 0x00, 0x87, 0x06, 0x00, 0x80, 0x85, 0xc0, 0x75, 0xf5, 0x66, 0xa1, 0x04, 0x80, 0x66, 0x3d, 0x2c, 0x01, 0x00, 0x00, 0x73, 0x1b, 0x66, 0x89,
        0xc2, 0x83, 0xe2, 0x01, 0x39, 0xda, 0x75, 0x09, 0x66, 0xe7, 0x10, 0x66, 0x40, 0x66, 0xa3, 0x04, 0x80, 0xc7, 0x06, 0x00, 0x80, 0x00, 0x00, 0xeb, 0xce,
        0xc7, 0x06, 0x00, 0x80, 0x00, 0x00, 0xf4,
      ],
      { entry: ENTRY, vcpus: 2 },
    );
    for (const [id, vcpu] of guest.vcpus.entries()) vcpu.setRegs({ ...vcpu.getRegs(), rbx: BigInt(id) });
    const written: number[] = [];
    const b = buses();
    b.pio.insert(
      {
        read: (_o, data) => void data.fill(0),
        write: (_o, data) => {
          // The device thread is busy now and then (a disk completion, a socket) while both vCPUs go on.
          if (written.length % 10 === 0) for (const start = Date.now(); Date.now() - start < 1; );
          written.push(new DataView(data.buffer, data.byteOffset).getUint32(0, true));
        },
      },
      0x10,
      4,
      'turns',
    );
    const threads = new VcpuThreads(guest.vcpus, b);
    threads.start();
    const stops = await threads.stopped;
    expect(stops.map((s) => s.reason)).to.deep.equal(['hlt', 'hlt']);
    const outOfOrder = written.findIndex((v, i) => v !== i);
    expect(outOfOrder, `first write out of the guest's order at ${outOfOrder}: ${written.slice(outOfOrder, outOfOrder + 4).join(' ')}`).to.equal(-1);
    expect(written).to.have.length(TURNS);
    guest.close();
  });

  it('resumes a stopped vCPU under a new runner where it left off', async () => {
    const guest = realModeVm(COUNT, { entry: ENTRY });
    const counter = () => guest.memory.readU32(0x8000);
    const runUntilCounterPasses = async (floor: number) => {
      const threads = new VcpuThreads(guest.vcpus, buses());
      threads.start();
      while (counter() <= floor) await sleep(5);
      const [stop] = await threads.stop();
      expect(stop!.reason).to.equal('stopped');
      return counter();
    };
    const first = await runUntilCounterPasses(0);
    await sleep(20);
    expect(counter(), 'a stopped guest does not run').to.equal(first);
    const second = await runUntilCounterPasses(first);
    expect(second).to.be.greaterThan(first);
    guest.close();
  });

  it('stops at once when asked before the guest ever ran', async () => {
    const guest = realModeVm(SPIN, { entry: ENTRY });
    const threads = new VcpuThreads(guest.vcpus, buses());
    threads.start();
    const [stop] = await threads.stop();
    expect(stop!.reason).to.equal('stopped');
    guest.close();
  });

  it('reports a device that throws as an error stop naming the problem', async () => {
    const guest = realModeVm([0xe6, 0x70, 0xf4], { entry: ENTRY }); // out 0x70, al; hlt
    const b = buses();
    const broken: BusDevice = {
      read: () => undefined,
      write: () => {
        throw new Error('RTC index 0x80 out of range');
      },
    };
    b.pio.insert(broken, 0x70, 2, 'rtc');
    const threads = new VcpuThreads(guest.vcpus, b);
    threads.start();
    const [stop] = await threads.stopped;
    expect(stop!.reason).to.equal('error');
    expect(stop!.message).to.equal('vCPU 0: RTC index 0x80 out of range');
    guest.close();
  });

  it('runs vCPU-local devices inside the vCPU thread, with guest memory, and absent ranges', async () => {
    // out 0x90, al (x3) ; in al, 0x92 ; mov [0x8004], al ; out 0x70, al ; hlt
    const code = [0xe6, 0x90, 0xe6, 0x90, 0xe6, 0x90, 0xe4, 0x92, 0xa2, 0x04, 0x80, 0xe6, 0x70, 0xf4];
    const guest = realModeVm(code, { entry: ENTRY });
    const b = buses();
    const mainThreadPorts = new RecordingDevice();
    b.pio.insert(mainThreadPorts, 0x70, 0x30, 'main-thread ports');
    const threads = new VcpuThreads(guest.vcpus, b, {
      memory: guest.memory,
      localRanges: [
        {
          space: 'pio',
          base: 0x90,
          size: 1,
          name: 'counter',
          kind: 'module',
          module: new URL('./fixtures/guest-counter.js', import.meta.url).href,
          exportName: 'guestCounter',
          options: { address: 0x8000 },
        },
        { space: 'pio', base: 0x92, size: 1, name: 'nothing', kind: 'absent' },
      ],
    });
    threads.start();
    const [stop] = await threads.stopped;
    expect(stop!.reason, stop!.message).to.equal('hlt');
    expect(guest.memory.readU32(0x8000)).to.equal(3);
    expect(guest.memory.readU8(0x8004)).to.equal(0xff);
    expect(mainThreadPorts.accesses, 'local ranges shadow the main-thread bus').to.deep.equal([{ op: 'write', offset: 0, data: [0xff] }]);
    guest.close();
  });

  it('stops with an error naming a local device module that cannot be built', async () => {
    const guest = realModeVm(SPIN, { entry: ENTRY });
    const threads = new VcpuThreads(guest.vcpus, buses(), {
      localRanges: [
        {
          space: 'pio',
          base: 0x90,
          size: 1,
          name: 'counter',
          kind: 'module',
          module: new URL('./fixtures/guest-counter.js', import.meta.url).href,
          exportName: 'noSuchFactory',
        },
      ],
    });
    threads.start();
    const [stop] = await threads.stopped;
    expect(stop!.reason).to.equal('error');
    expect(stop!.message).to.match(/^vCPU 0: local device counter: .*guest-counter\.js exports no function noSuchFactory$/);
    guest.close();
  });

  it('answers unclaimed reads with all ones and ignores unclaimed writes', async () => {
    // in al, 0x60 ; mov [0x8000], al ; mov ax,0x2000 ; mov ds,ax ; mov bx,[0] ; xor ax,ax ; mov ds,ax ; mov [0x8002],bx ; hlt
    const code = [
      0xe4, 0x60, 0xa2, 0x00, 0x80, 0xb8, 0x00, 0x20, 0x8e, 0xd8, 0x8b, 0x1e, 0x00, 0x00, 0x31, 0xc0, 0x8e, 0xd8, 0x89, 0x1e, 0x02, 0x80, 0xe6, 0x61, 0xf4,
    ];
    const guest = realModeVm(code, { entry: ENTRY });
    const threads = new VcpuThreads(guest.vcpus, buses());
    threads.start();
    const [stop] = await threads.stopped;
    expect(stop!.reason, stop!.message).to.equal('hlt');
    expect(guest.memory.readU8(0x8000)).to.equal(0xff);
    expect(guest.memory.readU16(0x8002)).to.equal(0xffff);
    guest.close();
  });
});
