// The protocol's small messages, decoded by msgpackr: round trips of every request and control
// message, and each malformed input named as what it is (these reach a server from any peer).
import t from 'tap';
import { decodeRequest, decodeServerMessage, encodeMessage, ProtocolError } from '../../../src/pipeline/serve/protocol.ts';

t.test('requests and control messages round-trip through encodeMessage', async (t) => {
  const hello = { op: 'hello', rank: 3, world: 8, epoch: 2, step: 17, window: 4, batch_size: 1024, seed: 9, mode: 'eval' } as const;
  t.same(decodeRequest(encodeMessage(hello)), hello);
  t.same(decodeRequest(encodeMessage({ op: 'ack', epoch: 1, step: 5 })), { op: 'ack', epoch: 1, step: 5 });
  t.same(decodeRequest(encodeMessage({ op: 'bye' })), { op: 'bye' });
  t.same(decodeServerMessage(encodeMessage({ op: 'end_epoch', epoch: 4, steps: 12 } as never)), { op: 'end_epoch', epoch: 4, steps: 12 });
});

t.test('malformed requests are bad-request errors saying what is wrong', async (t) => {
  const bye = encodeMessage({ op: 'bye' });
  const cases: [string, Uint8Array, RegExp][] = [
    ['empty', new Uint8Array(0), /request is not msgpack: /],
    ['0xc1 (never used by msgpack)', Uint8Array.of(0xc1, 0xff, 0x00), /request is not msgpack: it starts with 0xc1/],
    ['truncated map', Uint8Array.of(0x82, 0xa2, 0x6f, 0x70), /request is not msgpack: /],
    ['trailing bytes, counted', Buffer.concat([bye, Buffer.from([1, 2, 3])]), /request has 3 bytes after its msgpack value/],
    ['an array', Uint8Array.of(0x93, 1, 2, 3), /request must be a msgpack map/],
    ['a bin', Uint8Array.of(0xc4, 2, 1, 2), /request must be a msgpack map/],
    ['a map without op (integer key)', Uint8Array.of(0x81, 0x01, 0x02), /request has no "op"/],
    // {op: "hello", rank: <bin of 2 bytes>}
    [
      'a bin where a number belongs',
      Uint8Array.of(0x82, 0xa2, 0x6f, 0x70, 0xa5, ...Buffer.from('hello'), 0xa4, ...Buffer.from('rank'), 0xc4, 2, 7, 7),
      /hello\.rank must be a non-negative integer, got bin\(2\)/,
    ],
    // {op: "hello", rank: 2^64 - 1}: msgpackr gives a BigInt, reported as its digits
    [
      'a uint64 beyond 2^53',
      Uint8Array.of(0x82, 0xa2, 0x6f, 0x70, 0xa5, ...Buffer.from('hello'), 0xa4, ...Buffer.from('rank'), 0xcf, ...new Array<number>(8).fill(0xff)),
      /hello\.rank must be a non-negative integer, got 18446744073709551615/,
    ],
  ];
  for (const [name, bytes, message] of cases) {
    t.throws(() => decodeRequest(bytes), message, name);
    try {
      decodeRequest(bytes);
    } catch (e) {
      t.ok(e instanceof ProtocolError && e.code === 'bad-request', `${name}: a bad-request ProtocolError`);
    }
  }
});

t.test('a frame is recognised by its first key and left undecoded', async (t) => {
  // {epoch: 0, ...}: not a control message
  t.equal(decodeServerMessage(Uint8Array.of(0x81, 0xa5, ...Buffer.from('epoch'), 0x00)), null);
});
