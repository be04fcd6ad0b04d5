import { expect } from 'chai';
import fc from 'fast-check';
import { RecordParser, decodeRecord, encodeRecord, type LabRecord } from '../../src/lab/protocol.js';

const record: fc.Arbitrary<LabRecord> = fc.oneof(
  fc.record({ kind: fc.constant('start' as const), index: fc.nat(999) }),
  fc.record({ kind: fc.constantFrom('out' as const, 'err' as const), index: fc.nat(999), data: fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)) }),
  fc.record({
    kind: fc.constant('exit' as const),
    index: fc.nat(999),
    status: fc.option(fc.nat(255)),
    signal: fc.option(fc.constantFrom('SIGKILL', 'SIGTERM')),
  }),
  fc.constant({ kind: 'done' as const }),
  fc.record({ kind: fc.constant('fail' as const), message: fc.string() }),
);

/** What a tty with ONLCR does to the stream: every LF becomes CR LF. */
const throughTty = (text: string): string => text.replace(/\n/g, '\r\n');

describe('lab: result channel records', () => {
  it('decodes what it encodes, through a tty that rewrites newlines and split at arbitrary points, ignoring noise', () => {
    fc.assert(
      fc.property(fc.array(record, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 10 }), (records, cuts) => {
        const stream = Buffer.from(throughTty(`boot noise\n${records.map(encodeRecord).join('random text @@lab\n')}`), 'latin1');
        const got: LabRecord[] = [];
        const parser = new RecordParser((r) => got.push(r));
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        let at = 0;
        for (const point of [...points, stream.length]) {
          parser.push(stream.subarray(at, point));
          at = point;
        }
        expect(got).to.deep.equal(records);
      }),
    );
  });

  it('ignores malformed records rather than guessing', () => {
    for (const line of [
      '@@lab start x',
      '@@lab out 1 not*base64',
      '@@lab exit 1 300 -',
      '@@lab exit 1 0',
      '@@lab done now',
      '@@lab bogus 1',
      '@@labdone',
      'done',
    ]) {
      expect(decodeRecord(line), line).to.equal(undefined);
    }
    expect(decodeRecord('@@lab exit 3 - SIGKILL\r')).to.deep.equal({ kind: 'exit', index: 3, status: null, signal: 'SIGKILL' });
  });
});
