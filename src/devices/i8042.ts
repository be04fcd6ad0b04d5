// The part of the i8042 keyboard controller a PC's reset path uses: command 0xfe on port 0x64 pulses
// the CPU reset line, which is how Linux reboots (reboot=k, and the FADT reset register here). The
// self-test and command-byte commands answer as a controller with no keyboard attached would.
import type { BusDevice } from './bus.js';
import type { StopRequestSink } from './platform-events.js';

/** Registered at port 0x60 over five ports: 0x60 data, 0x64 status/command (0x61 is the in-kernel PIT speaker). */
export const I8042_PORTS = 5;
const DATA = 0;
const COMMAND = 4;

const STATUS_OUTPUT_FULL = 0x01;
const STATUS_SYSTEM_FLAG = 0x04;
const STATUS_COMMAND = 0x08;

const CMD_READ_CONFIG = 0x20;
const CMD_WRITE_CONFIG = 0x60;
const CMD_SELF_TEST = 0xaa;
const CMD_INTERFACE_TEST = 0xab;
const CMD_PULSE_RESET = 0xfe;

const SELF_TEST_PASSED = 0x55;
const INTERFACE_OK = 0x00;

export class I8042 implements BusDevice {
  private config = 0x00;
  private output: number | undefined;
  private lastWasCommand = false;
  private expectingConfig = false;

  constructor(private readonly stop: StopRequestSink) {}

  read(offset: number, data: Uint8Array): void {
    data.fill(0xff);
    if (offset === COMMAND) {
      data[0] = STATUS_SYSTEM_FLAG | (this.lastWasCommand ? STATUS_COMMAND : 0) | (this.output !== undefined ? STATUS_OUTPUT_FULL : 0);
    } else if (offset === DATA && this.output !== undefined) {
      data[0] = this.output;
      this.output = undefined;
    }
  }

  write(offset: number, data: Uint8Array): void {
    const value = data[0];
    if (value === undefined) return;
    if (offset === COMMAND) {
      this.lastWasCommand = true;
      this.command(value);
    } else if (offset === DATA) {
      this.lastWasCommand = false;
      if (this.expectingConfig) this.config = value;
      this.expectingConfig = false;
    }
  }

  private command(value: number): void {
    switch (value) {
      case CMD_PULSE_RESET:
        this.stop('reset', 'the guest pulsed the reset line through the i8042');
        break;
      case CMD_READ_CONFIG:
        this.output = this.config;
        break;
      case CMD_WRITE_CONFIG:
        this.expectingConfig = true;
        break;
      case CMD_SELF_TEST:
        this.output = SELF_TEST_PASSED;
        break;
      case CMD_INTERFACE_TEST:
        this.output = INTERFACE_OK;
        break;
      default:
        break; // Port enable/disable and the rest change nothing a guest without a keyboard could see.
    }
  }
}
