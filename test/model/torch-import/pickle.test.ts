// The pickle reader, byte by byte: every supported opcode, streams written by CPython, the
// allow-list (nothing outside it is resolved or called, even when an allowed call comes first),
// unsupported opcodes and malformed input.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { PickleError, PickleSecurityError } from '../../../src/model/torch-import/errors.ts';
import {
  PyCallable,
  PyDict,
  PyGlobal,
  PyList,
  PyOpaque,
  PyTuple,
  pickleOps,
  scanPickle,
  unpickle,
  type PyValue,
  type UnpickleOptions,
} from '../../../src/model/torch-import/pickle.ts';
import { ZipArchive, bufferSource } from '../../../src/model/torch-import/zip.ts';
import { FIXTURES, P, pk } from './helpers.ts';

const none: UnpickleOptions = { globals: new Map() };
const load = (b: Buffer, o: UnpickleOptions = none): PyValue => unpickle(b, o);

/** Plain JS for comparisons: tuples as {tuple: [...]}, dicts as [key, value] lists. */
function plain(v: PyValue): unknown {
  if (v instanceof PyTuple) return { tuple: v.items.map(plain) };
  if (v instanceof PyList) return v.items.map(plain);
  if (v instanceof PyDict) return { [v.pyType]: [...v.map].map(([k, x]) => [k, plain(x)]) };
  if (v instanceof PyGlobal || v instanceof PyCallable) return { global: v.qualname };
  if (typeof v === 'bigint') return { bigint: v.toString() };
  if (Object.is(v, -0)) return '-0';
  return v;
}

t.test('scalars', async (t) => {
  t.equal(load(pk(P.proto(), P.none, P.stop)), null);
  t.equal(load(pk(P.proto(), P.true, P.stop)), true);
  t.equal(load(pk(P.proto(), P.false, P.stop)), false);
  for (const n of [0, 1, 255, 256, 65535, 65536, -1, -(2 ** 31), 2 ** 31 - 1]) t.equal(load(pk(P.int(n), P.stop)), n, `int ${n}`);
  for (const n of [0n, 1n, -1n, 127n, 128n, -128n, -129n, 2n ** 40n, -(2n ** 40n)]) t.equal(load(pk(P.long1(n), P.stop)), Number(n), `LONG1 ${n}`);
  t.equal(load(pk(P.long1(2n ** 64n), P.stop)), 2n ** 64n, 'LONG1 beyond 2^53 stays exact as a bigint');
  t.equal(load(pk(P.long1(-(2n ** 70n)), P.stop)), -(2n ** 70n));
  const long4 = Buffer.from([0x8b, 2, 0, 0, 0, 0xff, 0x7f]);
  t.equal(load(pk(long4, P.stop)), 0x7fff, 'LONG4');
  for (const x of [1.5, -0.1, 1e300, Infinity]) t.equal(load(pk(P.float(x), P.stop)), x, `BINFLOAT ${x}`);
  t.ok(Number.isNaN(load(pk(P.float(NaN), P.stop)) as number));
  t.equal(load(pk(P.str('héllo ✓'), P.stop)), 'héllo ✓', 'BINUNICODE is UTF-8');
  t.equal(load(pk(P.shortStr('ab'), P.stop)), 'ab', 'SHORT_BINUNICODE');
  const u8 = Buffer.concat([Buffer.from([0x8d]), Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('xyz'), P.stop]);
  t.equal(load(u8), 'xyz', 'BINUNICODE8');
  t.same(load(pk(Buffer.from([0x43, 3, 1, 2, 3]), P.stop)), new Uint8Array([1, 2, 3]), 'SHORT_BINBYTES');
  t.same(load(pk(Buffer.from([0x42, 2, 0, 0, 0, 9, 8]), P.stop)), new Uint8Array([9, 8]), 'BINBYTES');
});

t.test('containers, marks and the memo', async (t) => {
  t.same(plain(load(pk(P.emptyTuple, P.stop))), { tuple: [] });
  t.same(plain(load(pk(P.int(1), P.tuple1, P.stop))), { tuple: [1] });
  t.same(plain(load(pk(P.int(1), P.int(2), P.tuple2, P.stop))), { tuple: [1, 2] });
  t.same(plain(load(pk(P.int(1), P.int(2), P.int(3), P.tuple3, P.stop))), { tuple: [1, 2, 3] });
  t.same(plain(load(pk(P.mark, P.int(1), P.int(2), P.int(3), P.int(4), P.tuple, P.stop))), { tuple: [1, 2, 3, 4] });
  t.same(plain(load(pk(P.emptyList, P.int(1), P.append, P.mark, P.int(2), P.int(3), P.appends, P.stop))), [1, 2, 3]);
  t.same(plain(load(pk(P.mark, P.int(7), P.int(8), Buffer.from('l'), P.stop))), [7, 8], 'LIST');
  t.same(plain(load(pk(P.emptyDict, P.str('a'), P.int(1), P.setitem, P.mark, P.str('b'), P.none, P.int(3), P.str('c'), P.setitems, P.stop))), {
    dict: [
      ['a', 1],
      ['b', null],
      [3, 'c'],
    ],
  });
  t.same(plain(load(pk(P.mark, P.str('k'), P.int(1), Buffer.from('d'), P.stop))), { dict: [['k', 1]] }, 'DICT');
  // BINPUT/BINGET share one object: the list appended to after being fetched twice.
  const shared = load(pk(P.emptyList, P.put(0), P.get(0), P.tuple2, P.stop)) as PyTuple;
  t.equal(shared.items[0], shared.items[1], 'memo returns the same object');
  const longMemo = pk(P.str('v'), Buffer.from([0x72, 0, 1, 0, 0]), Buffer.from('0'), Buffer.from([0x6a, 0, 1, 0, 0]), P.stop);
  t.equal(load(longMemo), 'v', 'LONG_BINPUT / POP / LONG_BINGET');
  t.equal(load(pk(P.str('m'), P.memoize, Buffer.from('0'), P.get(0), P.stop)), 'm', 'MEMOIZE numbers from 0');
  t.same(plain(load(pk(P.int(5), Buffer.from('2'), P.tuple2, P.stop))), { tuple: [5, 5] }, 'DUP');
  t.equal(load(pk(P.int(1), P.mark, P.int(2), P.int(3), Buffer.from('1'), P.stop)), 1, 'POP_MARK');
  const frame = pk(P.proto(4), Buffer.from([0x95, 3, 0, 0, 0, 0, 0, 0, 0]), P.int(9), P.stop);
  t.equal(load(frame), 9, 'FRAME is skipped');
});

t.test('streams written by CPython pickle (protocols 2 and 4) read back the same', async (t) => {
  // pickle.dumps(obj, protocol=p) of
  //   obj = {'a': [1, -2, 255, 256, 65536, -2**31, 2**31, 2**40, -2**70, 2**64, 1.5, -0.0, None, True,
  //                False, 'é✓', (1, 2), (), (1,), (1, 2, 3), (1, 2, 3, 4)],
  //          'b': {1: 'x', -3: 'y'}, 'shared': (l, l)}   with l = [1]
  const streams = {
    2: '80027d71002858010000006171015d7102284b014afeffffff4bff4d00014a000001004a000000808a0500000080008a060000000000018a090000000000000000c08a09000000000000000001473ff80000000000004780000000000000004e88895805000000c3a9e29c9371034b014b02867104294b018571054b014b024b03877106284b014b024b034b047471076558010000006271087d7109284b01580100000078710a4afdffffff580100000079710b755806000000736861726564710c5d710d4b0161680d86710e752e',
    4: '800495ac000000000000007d94288c0161945d94284b014afeffffff4bff4d00014a000001004a000000808a0500000080008a060000000000018a090000000000000000c08a09000000000000000001473ff80000000000004780000000000000004e88898c05c3a9e29c93944b014b028694294b0185944b014b024b038794284b014b024b034b047494658c0162947d94284b018c0178944afdffffff8c017994758c06736861726564945d944b0161680d8694752e',
  };
  const want = {
    dict: [
      [
        'a',
        [
          1,
          -2,
          255,
          256,
          65536,
          -(2 ** 31),
          2 ** 31,
          2 ** 40,
          { bigint: (-(2n ** 70n)).toString() },
          { bigint: (2n ** 64n).toString() },
          1.5,
          '-0',
          null,
          true,
          false,
          'é✓',
          { tuple: [1, 2] },
          { tuple: [] },
          { tuple: [1] },
          { tuple: [1, 2, 3] },
          { tuple: [1, 2, 3, 4] },
        ],
      ],
      [
        'b',
        {
          dict: [
            [1, 'x'],
            [-3, 'y'],
          ],
        },
      ],
      ['shared', { tuple: [[1], [1]] }],
    ],
  };
  for (const [p, hex] of Object.entries(streams)) {
    const v = load(Buffer.from(hex, 'hex')) as PyDict;
    t.same(plain(v), want, `protocol ${p}`);
    const shared = v.get('shared') as PyTuple;
    t.equal(shared.items[0], shared.items[1], `protocol ${p}: the shared list is one object`);
  }
});

t.test('allowed globals: inert values and TypeScript callables', async (t) => {
  let calls = 0;
  const opts: UnpickleOptions = {
    globals: new Map<string, PyValue>([
      ['m.Tag', new PyGlobal('m.Tag')],
      [
        'm.add',
        new PyCallable('m.add', (args) => {
          calls++;
          return (args[0] as number) + (args[1] as number);
        }),
      ],
    ]),
  };
  t.equal(load(pk(P.global('m', 'add'), P.int(2), P.int(3), P.tuple2, P.reduce, P.stop), opts), 5);
  t.equal(calls, 1);
  t.same(plain(load(pk(P.global('m', 'Tag'), P.stop), opts)), { global: 'm.Tag' });
  t.equal(load(pk(P.shortStr('m'), P.shortStr('add'), P.stackGlobal, P.int(1), P.int(1), P.tuple2, P.reduce, P.stop), opts), 2, 'STACK_GLOBAL');
  t.throws(
    () => load(pk(P.global('m', 'Tag'), P.emptyTuple, P.reduce, P.stop), opts),
    /REDUCE calls m\.Tag, which is not an allowed callable/,
    'an inert global cannot be called',
  );
  t.throws(() => load(pk(P.global('m', 'add'), P.emptyList, P.reduce, P.stop), opts), /not a tuple/);
  t.throws(
    () =>
      load(pk(P.global('m', 'add'), P.str('x'), P.tuple1, P.reduce, P.stop), {
        globals: new Map([
          [
            'm.add',
            new PyCallable('m.add', () => {
              throw new Error('bad x');
            }),
          ],
        ]),
      }),
    /m\.add: bad x/,
  );
});

t.test('anything off the allow-list is refused before anything is built or called', async (t) => {
  let calls = 0;
  const opts: UnpickleOptions = {
    globals: new Map<string, PyValue>([
      [
        'ok.fn',
        new PyCallable('ok.fn', () => {
          calls++;
          return null;
        }),
      ],
    ]),
  };
  const cases: [string, Buffer, string][] = [
    ['GLOBAL', pk(P.proto(), P.global('os', 'system'), P.str('touch x'), P.tuple1, P.reduce, P.stop), 'os.system'],
    [
      'GLOBAL after an allowed call',
      pk(P.proto(), P.global('ok', 'fn'), P.emptyTuple, P.reduce, P.global('builtins', 'eval'), P.str('1'), P.tuple1, P.reduce, P.tuple2, P.stop),
      'builtins.eval',
    ],
    ['STACK_GLOBAL', pk(P.proto(4), P.shortStr('posix'), P.shortStr('system'), P.stackGlobal, P.str('id'), P.tuple1, P.reduce, P.stop), 'posix.system'],
    ['INST', Buffer.from("(S'id'\nios\nsystem\n."), 'os.system'],
    ['GLOBAL that is never called', pk(P.proto(), P.global('subprocess', 'Popen'), P.stop), 'subprocess.Popen'],
  ];
  for (const [what, bytes, name] of cases) {
    const err = t.throws(() => load(bytes, opts), PickleSecurityError, what) as unknown as PickleSecurityError;
    t.equal(err.global, name, `${what} names ${name}`);
    t.ok(err instanceof PickleError, 'a PickleSecurityError is a PickleError');
  }
  t.equal(calls, 0, 'GLOBAL / INST are refused by the scan, before the allowed call runs');
  t.throws(() => scanPickle(cases[0]![1], opts), PickleSecurityError, 'scanPickle alone refuses');
  // STACK_GLOBAL names come off the stack, so only the run catches them: the allowed call before
  // it has run, the refused one has not.
  const late = pk(
    P.proto(4),
    P.global('ok', 'fn'),
    P.emptyTuple,
    P.reduce,
    P.shortStr('os'),
    P.shortStr('system'),
    P.stackGlobal,
    P.str('id'),
    P.tuple1,
    P.reduce,
    P.tuple2,
    P.stop,
  );
  t.throws(() => load(late, opts), { name: 'PickleSecurityError', global: 'os.system' });
  t.equal(calls, 1);
  t.throws(() => load(pk(P.int(1), P.int(2), P.stackGlobal, P.stop)), /STACK_GLOBAL needs two strings/);
});

t.test('unsupported opcodes are errors, not fallbacks', async (t) => {
  const opts: UnpickleOptions = { globals: new Map<string, PyValue>([['m.C', new PyGlobal('m.C')]]) };
  t.throws(() => load(Buffer.from('(im\nC\n.'), opts), /INST is not supported/, 'INST of an allowed name');
  t.throws(() => load(pk(P.global('m', 'C'), P.emptyTuple, Buffer.from([0x81]), P.stop), opts), /NEWOBJ is not supported/);
  t.throws(() => load(pk(P.global('m', 'C'), P.mark, Buffer.from('o'), P.stop), opts), /OBJ is not supported/);
  t.throws(() => load(pk(Buffer.from([0x82, 1]), P.stop)), /EXT1 is not supported/);
  t.throws(() => load(Buffer.from('I42\n.')), /INT is not supported/, 'protocol-0 text opcodes');
  t.throws(() => load(Buffer.from("S'abc'\n.")), /STRING is not supported/);
  t.throws(() => load(pk(Buffer.from([0x8f]), P.stop)), /EMPTY_SET is not supported/);
  t.throws(() => load(pk(P.str('pid'), P.persid, P.stop)), /persistent ids are not supported/);
});

t.test('BUILD sets attributes on dicts only', async (t) => {
  const d = load(pk(P.emptyDict, P.emptyDict, P.str('_metadata'), P.int(1), P.setitem, P.build, P.stop)) as PyDict;
  t.equal(d.attrs.get('_metadata'), 1);
  t.equal(d.map.size, 0, 'attributes are not items');
  const slots = load(pk(P.emptyDict, P.none, P.emptyDict, P.str('s'), P.int(2), P.setitem, P.tuple2, P.build, P.stop)) as PyDict;
  t.equal(slots.attrs.get('s'), 2, '(dict_state, slot_state) form');
  t.throws(() => load(pk(P.emptyList, P.emptyDict, P.build, P.stop)), /BUILD on list/);
  t.throws(() => load(pk(P.emptyDict, P.int(1), P.build, P.stop)), /BUILD state of a dict is number 1/);
  class Thing extends PyOpaque {
    readonly pyType = 'thing';
  }
  const opts: UnpickleOptions = { globals: new Map([['m.make', new PyCallable('m.make', () => new Thing())]]) };
  t.throws(() => load(pk(P.global('m', 'make'), P.emptyTuple, P.reduce, P.emptyDict, P.build, P.stop), opts), /BUILD is not supported on thing/);
});

t.test('malformed streams', async (t) => {
  const bad: [string, Buffer, RegExp][] = [
    ['empty', Buffer.alloc(0), /stream ends without STOP/],
    ['no STOP', pk(P.int(1)), /stream ends without STOP/],
    ['unknown opcode', Buffer.from([0xff]), /unknown opcode 0xff/],
    ['truncated int', Buffer.from([0x4a, 1, 2]), /BININT needs 4 more bytes/],
    ['string longer than the data', Buffer.from([0x58, 0xff, 0xff, 0xff, 0x7f, 0x41]), /BINUNICODE needs 2147483647 more bytes/],
    ['negative LONG4 length', Buffer.from([0x8b, 0xff, 0xff, 0xff, 0xff]), /negative length/],
    ['unterminated GLOBAL', Buffer.from('cos\nsys'), /unterminated text argument/],
    ['STOP on an empty stack', P.stop, /stack underflow/],
    ['TUPLE2 underflow', pk(P.int(1), P.tuple2, P.stop), /stack underflow/],
    ['pop below a MARK', pk(P.int(1), P.mark, P.tuple1, P.stop), /stack underflow/],
    ['TUPLE without MARK', pk(P.tuple, P.stop), /no MARK/],
    ['memo miss', pk(P.get(3), P.stop), /memo slot 3 is empty/],
    ['APPEND to a dict', pk(P.emptyDict, P.int(1), P.append, P.stop), /not a list/],
    ['SETITEM on a list', pk(P.emptyList, P.int(1), P.int(2), P.setitem, P.stop), /not a dict/],
    ['odd SETITEMS', pk(P.emptyDict, P.mark, P.int(1), P.setitems, P.stop), /odd number/],
    ['tuple as a dict key', pk(P.emptyDict, P.emptyTuple, P.int(1), P.setitem, P.stop), /dict key of an unsupported type \(tuple\[0\]\)/],
    ['invalid UTF-8', Buffer.from([0x8c, 2, 0xc3, 0x28, 0x2e]), /not valid UTF-8/],
    ['protocol 6', pk(P.proto(6), P.none, P.stop), /protocol 6 is newer than 5/],
    ['huge LONG4', pk(Buffer.from([0x8b, 0x00, 0x10, 0, 0]), Buffer.alloc(4096, 1), P.stop), /LONG4 of 4096 bytes is too large/],
  ];
  for (const [what, bytes, re] of bad) {
    t.throws(() => load(bytes), re, what);
    t.throws(() => load(bytes), PickleError, `${what}: a PickleError`);
  }
  const err = t.throws(() => load(pk(P.int(1), P.get(3), P.stop))) as unknown as PickleError;
  t.equal(err.offset, 2, 'errors carry the opcode offset');
});

t.test('pickleOps walks a real torch.save pickle without running it', async (t) => {
  const zip = ZipArchive.open(bufferSource(readFileSync(`${FIXTURES}plain.pt`)));
  const ops = [...pickleOps(zip.read('plain/data.pkl'))];
  t.equal(ops[0]!.name, 'PROTO');
  t.equal(ops[0]!.value, 2, 'protocol 2');
  t.equal(ops[ops.length - 1]!.name, 'STOP');
  const globals = new Set(ops.filter((o) => o.name === 'GLOBAL').map((o) => (o.value as string[]).join('.')));
  t.same([...globals].sort(), ['collections.OrderedDict', 'torch.FloatStorage', 'torch._utils._rebuild_tensor_v2']);
  t.equal(ops.filter((o) => o.name === 'BINPERSID').length, 10, 'one persistent id per tensor');
});
