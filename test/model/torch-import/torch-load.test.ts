// torch.load without Python: every committed fixture gives exactly the values PyTorch saved
// (expected.json, written by the same generator), every dtype converts, strided views and
// storage offsets are honoured, and broken or foreign files fail with a clear error.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { PickleError, PickleSecurityError, TorchFileError, ZipError } from '../../../src/model/torch-import/errors.ts';
import { PyDict, PyList, PyTuple } from '../../../src/model/torch-import/pickle.ts';
import { TorchFile, TorchTensor, decodeElements, gatherStrided } from '../../../src/model/torch-import/torch-load.ts';
import { tempDir } from '../../helpers/tmp.ts';
import { FIXTURES, P, expected, f32, makeZip, pk, tensorCall, torchZip } from './helpers.ts';

function tensorsOf(d: PyDict): Map<string, TorchTensor> {
  return new Map([...d.map].map(([k, v]) => [k as string, v as TorchTensor]));
}

function sameValues(t: Test, got: Float32Array, want: number[], what: string): void {
  const bad = want.findIndex((w, i) => !(Math.fround(w) === got[i] || (Number.isNaN(w) && Number.isNaN(got[i]!))));
  t.ok(
    got.length === want.length && bad < 0,
    `${what}: ${got.length} values equal what PyTorch saved${bad >= 0 ? ` (first difference at ${bad}: ${got[bad]} vs ${want[bad]})` : ''}`,
  );
}

t.test('state-dict fixtures: exactly the float32 values PyTorch saved', async (t) => {
  const cases: [string, (root: PyDict) => PyDict, string, Record<string, { shape: number[]; values: number[] }>][] = [
    ['plain.pt', (r) => r, '', expected.state_dict],
    ['checkpoint.pt', (r) => r.get('model') as PyDict, '', expected.state_dict],
    ['dataparallel.pt', (r) => r, 'module.', expected.state_dict],
    ['half.pt', (r) => r, '', expected.half_state_dict],
    ['noncontiguous.pt', (r) => r, '', expected.state_dict],
    ['deflated.pt', (r) => r, '', expected.state_dict],
  ];
  for (const [name, pick, prefix, want] of cases) {
    const file = TorchFile.open(`${FIXTURES}${name}`);
    t.teardown(() => file.close());
    const sd = tensorsOf(pick(file.root as PyDict));
    t.same([...sd.keys()].map((k) => k.slice(prefix.length)).sort(), Object.keys(want).sort(), `${name}: keys`);
    for (const [k, tensor] of sd) {
      const w = want[k.slice(prefix.length)]!;
      t.same(tensor.shape, w.shape, `${name} ${k}: shape`);
      sameValues(t, file.readFloat32(tensor), w.values, `${name} ${k}`);
    }
  }
});

t.test('what the fixtures exercise', async (t) => {
  const plain = TorchFile.open(`${FIXTURES}plain.pt`);
  t.teardown(() => plain.close());
  t.same(plain.info, { prefix: 'plain', version: '3', byteOrder: 'little' });
  const root = plain.root as PyDict;
  t.equal(root.pyType, 'collections.OrderedDict', 'state_dict() is an OrderedDict');
  t.ok(root.attrs.get('_metadata') instanceof PyDict, 'its _metadata attribute came through BUILD');

  const half = TorchFile.open(`${FIXTURES}half.pt`);
  t.teardown(() => half.close());
  t.ok([...tensorsOf(half.root as PyDict).values()].every((x) => x.dtype === 'float16'));

  const nc = TorchFile.open(`${FIXTURES}noncontiguous.pt`);
  t.teardown(() => nc.close());
  const sd = tensorsOf(nc.root as PyDict);
  const w = sd.get('linear_in.weight')!;
  t.same([w.shape, w.stride, w.isContiguous], [[8, 48], [1, 8], false], 'linear_in.weight is a transposed view');
  const b = sd.get('linear_out.bias')!;
  t.same([b.storageOffset, b.storage.numel, b.isContiguous], [3, 10, true], 'linear_out.bias sits at offset 3 of a larger storage');
  const w0 = sd.get('blocks.0.block.0.weight')!;
  t.same([w0.shape, w0.stride, w0.isContiguous], [[32, 8], [16, 1], false], 'a column slice: rows strided');

  const ck = TorchFile.open(`${FIXTURES}checkpoint.pt`);
  t.teardown(() => ck.close());
  const top = ck.root as PyDict;
  t.equal(top.get('epoch'), 3);
  const args = top.get('args') as PyDict;
  t.equal(args.get('steps'), 2 ** 40);
  t.equal(args.get('neg'), -7);
  t.same((args.get('betas') as PyTuple).items, [0.9, 0.99]);
  t.same((args.get('flags') as PyList).items, [true, false]);
  const opt = top.get('optimizer') as PyDict;
  t.ok((opt.get('state') as PyDict).get(0) instanceof PyDict, 'optimizer state has int keys');
});

t.test('tensors.pt: every allowed storage type, views, parameters, shared storage', async (t) => {
  const file = TorchFile.open(`${FIXTURES}tensors.pt`);
  t.teardown(() => file.close());
  const root = file.root as PyDict;
  const ts = tensorsOf(root.get('tensors') as PyDict);
  t.same([...ts.keys()].sort(), Object.keys(expected.tensors).sort());
  for (const [k, tensor] of ts) {
    const w = expected.tensors[k]!;
    t.equal(tensor.dtype, w.dtype === 'bool' ? 'bool' : w.dtype, `${k}: dtype ${w.dtype}`);
    t.same(tensor.shape, w.shape, `${k}: shape`);
    sameValues(t, file.readFloat32(tensor), w.values, k);
  }
  t.same(ts.get('scalar')!.shape, [], 'a 0-d tensor');
  t.same(ts.get('expanded')!.stride, [0, 1], 'expand() gives stride 0');
  t.ok(ts.get('param')!.isParameter && ts.get('param')!.requiresGrad, '_rebuild_parameter');
  t.equal(ts.get('shared_a')!.storage, ts.get('shared_b')!.storage, 'two views of one storage share it');
  t.equal(ts.get('shared_b')!.storageOffset, 16);
  const nested = root.get('nested') as PyDict;
  t.same((nested.get('list') as PyList).items, [1, 2.5, 'three', null]);
  t.same(
    (nested.get('int_keys') as PyDict).map,
    new Map([
      [0, 'a'],
      [1, 'b'],
    ]),
  );
});

t.test('decodeElements and gatherStrided', async (t) => {
  const h = Buffer.alloc(12);
  [0x3c00, 0xc000, 0x7c00, 0xfc00, 0x0001, 0x7e00].forEach((v, i) => h.writeUInt16LE(v, 2 * i));
  const half = decodeElements(h, 'float16', 0, 6);
  t.same(Array.from(half.subarray(0, 5)), [1, -2, Infinity, -Infinity, 2 ** -24], 'float16 incl. inf and subnormal');
  t.ok(Number.isNaN(half[5]!));
  const bf = Buffer.alloc(4);
  bf.writeUInt16LE(0x3fc0, 0);
  bf.writeUInt16LE(0xc020, 2);
  t.same(Array.from(decodeElements(bf, 'bfloat16', 0, 2)), [1.5, -2.5]);
  const be = Buffer.alloc(8);
  be.writeFloatBE(1.25, 0);
  be.writeFloatBE(-3, 4);
  t.same(Array.from(decodeElements(be, 'float32', 0, 2, true)), [1.25, -3], 'big-endian');
  const odd = Buffer.concat([Buffer.from([0]), f32([7, 8])]).subarray(1);
  t.same(Array.from(decodeElements(odd, 'float32', 1, 1)), [8], 'unaligned float32 with an element offset');
  t.throws(() => decodeElements(f32([1]), 'float32', 0, 2), RangeError);

  const src = Float32Array.from({ length: 24 }, (_, i) => i);
  t.same(Array.from(gatherStrided(src, 0, [3, 2], [1, 3])), [0, 3, 1, 4, 2, 5], 'transpose');
  t.same(Array.from(gatherStrided(src, 5, [2], [4])), [5, 9], 'offset and step');
  t.same(Array.from(gatherStrided(src, 2, [2, 2, 2], [12, 1, 4])), [2, 6, 3, 7, 14, 18, 15, 19], '3-D permuted');
  t.same(Array.from(gatherStrided(src, 1, [3, 2], [0, 1])), [1, 2, 1, 2, 1, 2], 'stride 0 (expand)');
  t.same(Array.from(gatherStrided(src, 7, [], [])), [7], 'scalar');
  t.equal(gatherStrided(src, 0, [0, 4], [4, 1]).length, 0, 'empty');
});

t.test('hand-written archives: byteorder, _rebuild_from_type_v2, protocol 4', async (t) => {
  const pkl = pk(P.proto(), P.emptyDict, P.str('w'), tensorCall('0', 4, [2, 2], [1, 2]), P.setitem, P.stop);
  const big = Buffer.alloc(16);
  [1, 2, 3, 4].forEach((v, i) => big.writeFloatBE(v, 4 * i));
  const be = TorchFile.fromBuffer(torchZip(pkl, { '0': big }, [{ name: 'archive/byteorder', data: Buffer.from('big') }]), 'be.pt');
  t.equal(be.info.byteOrder, 'big');
  t.same(Array.from(be.readFloat32((be.root as PyDict).get('w') as TorchTensor)), [1, 3, 2, 4], 'big-endian storage, transposed');

  // _rebuild_from_type_v2(_rebuild_tensor_v2, torch.Tensor, (storage, 0, (2,), (1,), False, OrderedDict()), {})
  const typed = pk(
    P.proto(),
    P.global('torch._tensor', '_rebuild_from_type_v2'),
    P.mark,
    P.global('torch._utils', '_rebuild_tensor_v2'),
    P.global('torch', 'Tensor'),
    P.mark,
    P.mark,
    P.str('storage'),
    P.global('torch', 'FloatStorage'),
    P.str('0'),
    P.str('cpu'),
    P.int(2),
    P.tuple,
    P.persid,
    P.int(0),
    P.int(2),
    P.tuple1,
    P.int(1),
    P.tuple1,
    P.false,
    P.global('collections', 'OrderedDict'),
    P.emptyTuple,
    P.reduce,
    P.tuple,
    P.emptyDict,
    P.tuple,
    P.reduce,
    P.stop,
  );
  const ft = TorchFile.fromBuffer(torchZip(typed, { '0': f32([5, 6]) }), 'typed.pt');
  t.same(Array.from(ft.readFloat32(ft.root as TorchTensor)), [5, 6], '_rebuild_from_type_v2 with torch.Tensor');
  const sub = Buffer.from(typed.toString('latin1').replace('ctorch\nTensor\n', 'cmy\nTensor\n'), 'latin1');
  t.throws(
    () => TorchFile.fromBuffer(torchZip(sub, { '0': f32([5, 6]) }), 'sub.pt'),
    { name: 'PickleSecurityError', global: 'my.Tensor' },
    'a tensor subclass is refused',
  );

  const p4 = pk(
    P.proto(4),
    Buffer.from([0x95, 0, 0, 0, 0, 0, 0, 0, 0]),
    P.shortStr('collections'),
    P.memoize,
    P.shortStr('OrderedDict'),
    P.memoize,
    P.stackGlobal,
    P.emptyTuple,
    P.reduce,
    P.stop,
  );
  const f4 = TorchFile.fromBuffer(torchZip(p4), 'p4.pt');
  t.equal((f4.root as PyDict).pyType, 'collections.OrderedDict', 'STACK_GLOBAL of an allowed name');
});

t.test('broken and foreign files', async (t) => {
  const dir = tempDir(t);
  const write = (name: string, data: Uint8Array): string => {
    const p = join(dir, name);
    writeFileSync(p, data);
    return p;
  };
  const one = pk(P.proto(), tensorCall('0', 4, [4], [1]), P.stop);
  const cases: [string, () => unknown, unknown, RegExp][] = [
    ['no such file', () => TorchFile.open(join(dir, 'nope.pt')), TorchFileError, /cannot open/],
    ['legacy format', () => TorchFile.open(write('legacy.pt', Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc]))), TorchFileError, /legacy .* format/],
    ['not a zip', () => TorchFile.open(write('text.pt', Buffer.from('hello world, this is not a checkpoint'))), ZipError, /not a zip archive/],
    [
      'TorchScript',
      () =>
        TorchFile.fromBuffer(
          makeZip([
            { name: 'm/constants.pkl', data: Buffer.from('x') },
            { name: 'm/code/m.py', data: Buffer.from('x') },
          ]),
        ),
      TorchFileError,
      /TorchScript archive/,
    ],
    ['no data.pkl', () => TorchFile.fromBuffer(makeZip([{ name: 'a/b', data: Buffer.from('x') }])), TorchFileError, /no <name>\/data\.pkl/],
    [
      'two data.pkl',
      () =>
        TorchFile.fromBuffer(
          makeZip([
            { name: 'a/data.pkl', data: P.stop },
            { name: 'b/data.pkl', data: P.stop },
          ]),
        ),
      TorchFileError,
      /several data\.pkl/,
    ],
    [
      'bad byteorder',
      () => TorchFile.fromBuffer(torchZip(pk(P.none, P.stop), {}, [{ name: 'archive/byteorder', data: Buffer.from('middle') }])),
      TorchFileError,
      /byteorder record/,
    ],
    ['storage entry missing', () => TorchFile.fromBuffer(torchZip(one)), PickleError, /storage 0 has no archive\/data\/0/],
    ['storage size mismatch', () => TorchFile.fromBuffer(torchZip(one, { '0': f32([1, 2, 3]) })), PickleError, /has 12 bytes, float32\[4\] needs 16/],
    [
      'view past the storage',
      () => TorchFile.fromBuffer(torchZip(pk(P.proto(), tensorCall('0', 4, [3], [2]), P.stop), { '0': f32([1, 2, 3, 4]) })),
      PickleError,
      /reaches element 4 of a 4-element storage/,
    ],
    [
      'rank mismatch',
      () => TorchFile.fromBuffer(torchZip(pk(P.proto(), tensorCall('0', 4, [4], []), P.stop), { '0': f32([1, 2, 3, 4]) })),
      PickleError,
      /size has 1 dimensions, stride 0/,
    ],
    [
      'storage type not allowed',
      () => TorchFile.fromBuffer(torchZip(pk(P.proto(), tensorCall('0', 4, [4], [1], 0, 'ComplexFloatStorage'), P.stop), { '0': f32([1, 2, 3, 4]) })),
      PickleSecurityError,
      /torch\.ComplexFloatStorage/,
    ],
    [
      'absurd size',
      () => TorchFile.fromBuffer(torchZip(pk(P.proto(), tensorCall('0', 4, [2 ** 30, 2 ** 30, 2 ** 30], [0, 0, 0]), P.stop), { '0': f32([1, 2, 3, 4]) })),
      PickleError,
      /is too large/,
    ],
    ['bad persistent id', () => TorchFile.fromBuffer(torchZip(pk(P.proto(), P.str('x'), P.persid, P.stop))), PickleError, /expected \('storage'/],
    [
      'one storage, two dtypes',
      () =>
        TorchFile.fromBuffer(
          torchZip(pk(P.proto(), tensorCall('0', 4, [4], [1]), tensorCall('0', 4, [4], [1], 0, 'IntStorage'), P.tuple2, P.stop), { '0': f32([1, 2, 3, 4]) }),
        ),
      PickleError,
      /used as float32\[4\] and int32\[4\]/,
    ],
  ];
  for (const [what, fn, cls, re] of cases) {
    t.throws(fn, cls as ErrorConstructor, what);
    t.throws(fn, re, what);
  }
  const whole = pk(P.proto(), P.global('torch.nn.modules.linear', 'Linear'), P.stop);
  t.throws(() => TorchFile.fromBuffer(torchZip(whole)), /save model\.state_dict\(\) instead/, 'a pickled module gets a hint');
});
