// A bus device for tests: records every access and answers reads with fixed bytes.
import type { BusDevice } from '../../src/devices/bus.js';

export interface Access {
  op: 'read' | 'write';
  offset: number;
  data: number[];
}

export class RecordingDevice implements BusDevice {
  readonly accesses: Access[] = [];

  constructor(private readonly answer: (offset: number, size: number) => number[] = () => []) {}

  read(offset: number, data: Uint8Array): void {
    data.set(this.answer(offset, data.length).slice(0, data.length));
    this.accesses.push({ op: 'read', offset, data: [...data] });
  }

  write(offset: number, data: Uint8Array): void {
    this.accesses.push({ op: 'write', offset, data: [...data] });
  }
}
