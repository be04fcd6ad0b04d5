// What the main thread and a device's I/O thread say to each other.
import type { MessagePort } from 'node:worker_threads';
import type { GuestMemoryDescriptor } from '../memory/guest-memory.js';
import type { VirtqueueFeatures, VirtqueueLayout } from './virtqueue.js';

export const IO_THREAD_ROLE = 'ts-vmm virtio I/O thread';
export const ACK_WORD = 0;
export const STOP_WORD = 1;

/** A class the worker constructs with `options`: a VirtioDevice that can also be closed. */
export interface ThreadedDeviceModule {
  /** URL of the ES module. */
  module: string;
  exportName: string;
  /** Structured-clone-able constructor argument. */
  options: unknown;
}

export interface IoThreadWorkerData {
  role: typeof IO_THREAD_ROLE;
  module: ThreadedDeviceModule;
  memory: GuestMemoryDescriptor;
  interruptStatus: SharedArrayBuffer;
  interruptFd: number;
  /** Signalled after each command posted on `port`. */
  controlFd: number;
  /** Two words: the sequence number of the last command done (ACK_WORD), for the main thread to wait on, and
   * STOP_WORD, set by the main thread before a reset or close so that long device work ends early. */
  ack: SharedArrayBuffer;
  port: MessagePort;
}

export interface ActivatedQueue {
  layout: VirtqueueLayout;
  features: VirtqueueFeatures;
  maxSize: number;
}

/** Main thread to worker, in order. */
export type IoThreadRequest =
  | { type: 'kicks'; fds: number[] }
  | { type: 'activate'; features: string; queues: (ActivatedQueue | null)[] }
  | { type: 'reset' }
  | { type: 'close' };

export type IoThreadCommand = IoThreadRequest & { sequence: number };

/** Worker to main thread. */
export type IoThreadEvent =
  | { type: 'ready'; deviceType: number; features: string; queueMaxSizes: number[]; config: Uint8Array }
  /** The device cannot go on (the transport sets DEVICE_NEEDS_RESET), or could not be built. */
  | { type: 'error'; message: string }
  | { type: 'config-changed' };
