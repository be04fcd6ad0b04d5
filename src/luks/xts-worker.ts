// The body of an XTS thread (xts-threads.ts): encrypts each chunk it is sent, in place, and sends it back.
import { parentPort, workerData } from 'node:worker_threads';
import type { XtsThreadData, XtsThreadJob } from './xts-threads.js';
import { XtsSectorCipher } from './xts.js';

const { key, sectorSize } = workerData as XtsThreadData;
const cipher = new XtsSectorCipher(Buffer.from(key), sectorSize);
new Uint8Array(key).fill(0);

// null: no more work (the thread then ends once its event loop is empty).
parentPort!.on('message', (job: XtsThreadJob | null) => {
  if (job === null) {
    parentPort!.close();
    return;
  }
  const { chunk, length, firstIv } = job;
  const data = Buffer.from(chunk, 0, length);
  cipher.run(false, data, data, firstIv);
  parentPort!.postMessage(chunk, [chunk]);
});
