// Reads the guest console as it streams past for the one event the hardware cannot report: a kernel
// panic. With panic=-1 a panicking kernel reboots through the same reset register as `reboot`, so
// the banner the kernel prints first is what tells the two apart; with panic=0 it prints a closing
// line and spins forever, so that line ends the run.
const PANIC_BANNER = 'Kernel panic - not syncing: ';
const PANIC_END = '---[ end Kernel panic - not syncing: ';
const LINE_LIMIT = 4096;

export class ConsoleWatch {
  private line = '';
  private panicReason: string | undefined;

  /** `onPanicEnd` runs once, when the kernel has finished reporting a panic and will do nothing more. */
  constructor(private readonly onPanicEnd: (reason: string) => void = () => undefined) {}

  /** Feed every byte the guest writes to its console, in order. */
  feed(bytes: Uint8Array): void {
    for (const b of bytes) {
      if (b === 0x0a) {
        this.endLine();
      } else if (b !== 0x0d && this.line.length < LINE_LIMIT) {
        this.line += String.fromCharCode(b);
      }
    }
  }

  /** The panic message (the rest of the banner line), once the guest has printed one. */
  get panic(): string | undefined {
    if (this.panicReason === undefined && this.line.includes(PANIC_BANNER)) this.endLine();
    return this.panicReason;
  }

  private endLine(): void {
    const line = this.line;
    this.line = '';
    if (line.includes(PANIC_END)) {
      if (this.panicReason !== undefined) this.onPanicEnd(this.panicReason);
      return;
    }
    const at = line.indexOf(PANIC_BANNER);
    if (at >= 0 && this.panicReason === undefined) this.panicReason = line.slice(at + PANIC_BANNER.length).trim();
  }
}
