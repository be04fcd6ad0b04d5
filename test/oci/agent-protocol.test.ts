import { expect } from 'chai';
import fc from 'fast-check';
import {
  decodeExit,
  encodeFrame,
  encodeProcess,
  encodeStdin,
  FrameDecoder,
  FrameType,
  HEADER_BYTES,
  MAX_PAYLOAD,
  MAX_PROCESS_BYTES,
  ProtocolError,
  shellStatus,
} from '../../src/oci/agent-protocol.js';

describe('agent protocol', () => {
  it('decodes any sequence of frames however the stream is split', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ type: fc.constantFrom(FrameType.Stdout, FrameType.Stderr, FrameType.Ready), payload: fc.uint8Array({ maxLength: 300 }) }), {
          maxLength: 20,
        }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 50 }),
        (frames, cuts) => {
          const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.payload)));
          const decoder = new FrameDecoder();
          const got: { type: number; payload: Uint8Array }[] = [];
          let off = 0;
          for (let i = 0; off < wire.length; i++) {
            const n = cuts[i % cuts.length]!;
            got.push(...decoder.push(wire.subarray(off, off + n)));
            off += n;
          }
          expect(got.map((f) => f.type)).to.deep.equal(frames.map((f) => f.type));
          for (const [i, f] of got.entries()) expect(Buffer.from(f.payload).equals(Buffer.from(frames[i]!.payload))).to.equal(true);
          expect(decoder.pendingBytes).to.equal(0);
        },
      ),
    );
  });

  it('carries a process description as NUL-terminated words in Process frames of at most MAX_PAYLOAD', () => {
    const words = ['--env', `A=${'a'.repeat(100_000)}`, '--', '/bin/x', 'é', ''];
    const frames = encodeProcess(words);
    const decoded = new FrameDecoder().push(Buffer.concat(frames));
    expect(decoded.every((f) => f.type === FrameType.Process && f.payload.length <= MAX_PAYLOAD)).to.equal(true);
    expect(decoded.length).to.equal(2);
    expect(Buffer.concat(decoded.map((f) => f.payload)).toString('utf8')).to.equal(words.map((w) => `${w}\0`).join(''));
    expect(() => encodeProcess(['a\0b'])).to.throw(ProtocolError, 'NUL');
    expect(() => encodeProcess(['x'.repeat(MAX_PROCESS_BYTES)])).to.throw(ProtocolError, 'exceeds');
  });

  it('rejects a header announcing more than MAX_PAYLOAD before buffering it', () => {
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32LE(MAX_PAYLOAD + 1, 0);
    header[4] = FrameType.Stdout;
    expect(() => new FrameDecoder().push(header)).to.throw(ProtocolError, /exceeds/);
  });

  it('splits large stdin into frames within the limit, preserving the bytes', () => {
    const data = Buffer.alloc(MAX_PAYLOAD * 2 + 7, 0x5a);
    const frames = encodeStdin(data);
    expect(frames).to.have.length(3);
    const decoded = new FrameDecoder().push(Buffer.concat(frames));
    expect(Buffer.concat(decoded.map((f) => f.payload)).equals(data)).to.equal(true);
    expect(decoded.every((f) => f.type === FrameType.Stdin && f.payload.length <= MAX_PAYLOAD)).to.equal(true);
  });

  it('decodes exit statuses and maps signals to 128+n, refusing nonsense', () => {
    expect(shellStatus(decodeExit(Uint8Array.from([0, 42, 0, 0, 0])))).to.equal(42);
    expect(shellStatus(decodeExit(Uint8Array.from([1, 15, 0, 0, 0])))).to.equal(143);
    expect(() => decodeExit(Uint8Array.from([0, 0, 1, 0, 0]))).to.throw(ProtocolError);
    expect(() => decodeExit(Uint8Array.from([2, 1, 0, 0, 0]))).to.throw(ProtocolError);
    expect(() => decodeExit(Uint8Array.from([1, 0, 0, 0, 0]))).to.throw(ProtocolError);
    expect(() => decodeExit(Uint8Array.from([0, 1]))).to.throw(ProtocolError);
  });
});
