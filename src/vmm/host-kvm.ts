// What kind of KVM this host has. kvm-pvm (in its "native" mode) runs unmodified guests by
// instruction emulation: correct, but a Linux boot takes hours there, so callers warn or go to the lab.
import { existsSync } from 'node:fs';

export const hostKvmEmulatesGuests = (): boolean => existsSync('/sys/module/kvm_pvm');
