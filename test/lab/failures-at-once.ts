// A mocha root hook for the inner runs in the lab: a failing test's error is printed as soon as it fails,
// not only in mocha's summary at the end, which a lab that stalls later never reaches.
import type { Context } from 'mocha';

export const mochaHooks = {
  afterEach(this: Context): void {
    const test = this.currentTest;
    if (test?.state !== 'failed') return;
    const error = (test as { err?: unknown }).err;
    const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
    process.stdout.write(`      failed: ${test.fullTitle()}\n${text.replace(/^/gm, '        ')}\n`);
  },
};
