// Asserts that a promise rejects with a message matching `pattern`.
import { expect } from 'chai';
import { errorMessage } from '../src/sys/error-message.js';

export async function expectReject(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await promise;
  } catch (e) {
    expect(errorMessage(e)).to.match(pattern);
    return;
  }
  expect.fail(`expected a rejection matching ${pattern}`);
}
