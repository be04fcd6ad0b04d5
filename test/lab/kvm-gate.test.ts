// Root-level hook (outside any describe, so mocha applies it to every test of the run): tests whose
// title carries the KVM tag are skipped here when KVM work must go to the lab; the lab suite
// (kvm-suite.test.ts) then runs them inside the lab instead.
import { labNeeded } from '../../src/kvm/probe.js';

const KVM_TAG = '@' + 'kvm';
let skipKvmTests: boolean | undefined;

beforeEach(function () {
  if (!this.currentTest?.fullTitle().includes(KVM_TAG)) return;
  skipKvmTests ??= labNeeded();
  if (skipKvmTests) this.skip();
});
