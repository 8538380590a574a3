// The safetensors bytes against files built by hand from the format description.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { SafetensorsError } from '../../src/model/errors.ts';
import { decodeSafetensors, encodeSafetensors, readSafetensorsFile, writeSafetensorsFile, type NamedTensor } from '../../src/model/safetensors.ts';
import { tempDir } from '../helpers/tmp.ts';

function f32le(values: number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeFloatLE(v, 4 * i));
  return b;
}

/** header length (u64 LE) + header JSON padded with spaces to a multiple of 8 + data */
function handBuilt(json: string, data: Buffer, pad = true): Buffer {
  const padded = pad ? json + ' '.repeat((8 - ((8 + json.length) % 8)) % 8) : json;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(padded.length));
  return Buffer.concat([len, Buffer.from(padded, 'utf8'), data]);
}

const tensors = new Map<string, NamedTensor>([
  ['linear_in.weight', { shape: [2, 3], data: Float32Array.from([1, -2, 0.5, 3.25, 0, -0.125]) }],
  ['linear_in.bias', { shape: [2], data: Float32Array.from([7, 8]) }],
]);
const JSON_HEADER =
  '{"__metadata__":{"format":"pt"},' +
  '"linear_in.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},' +
  '"linear_in.bias":{"dtype":"F32","shape":[2],"data_offsets":[24,32]}}';
const DATA = f32le([1, -2, 0.5, 3.25, 0, -0.125, 7, 8]);

t.test('encoder output is byte-identical to the hand-built file', async (t) => {
  const mine = encodeSafetensors(tensors, { format: 'pt' });
  const expected = handBuilt(JSON_HEADER, DATA);
  t.equal(mine.length, expected.length);
  t.ok(mine.equals(expected), 'same bytes');
  t.equal(Number(mine.readBigUInt64LE(0)) % 8, 0, 'header padded to a multiple of 8');
  t.equal((8 + Number(mine.readBigUInt64LE(0))) % 8, 0, 'data section 8-byte aligned');
  // No metadata: no __metadata__ key at all.
  const bare = encodeSafetensors(new Map([['x', { shape: [], data: Float32Array.from([2]) }]]));
  t.ok(bare.equals(handBuilt('{"x":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}', f32le([2]))), 'scalar, no metadata');
});

t.test('the streaming writer writes the same bytes', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'm.safetensors');
  writeSafetensorsFile(path, tensors, { format: 'pt' });
  t.ok(readFileSync(path).equals(encodeSafetensors(tensors, { format: 'pt' })));
});

t.test('decoder reads hand-built files: any key order, unpadded header, other dtypes', async (t) => {
  const shuffled =
    '{"linear_in.bias":{"dtype":"F32","shape":[2],"data_offsets":[24,32]},"__metadata__":{"a":"b"},' +
    '"linear_in.weight":{"shape":[2,3],"data_offsets":[0,24],"dtype":"F32"}}';
  const f = decodeSafetensors(handBuilt(shuffled, DATA, false));
  t.same(f.metadata, { a: 'b' });
  t.same(f.tensors.get('linear_in.weight')!.shape, [2, 3]);
  t.same(Array.from(f.tensors.get('linear_in.weight')!.data), [1, -2, 0.5, 3.25, 0, -0.125]);
  t.same(Array.from(f.tensors.get('linear_in.bias')!.data), [7, 8]);

  // F16: 1.0 = 0x3c00, -2.0 = 0xc000, 0.5 = 0x3800; BF16: top half of the float32 bits; F64 plain.
  const f16 = Buffer.from([0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38]);
  const bf16 = Buffer.from([0x80, 0x3f, 0x40, 0xc0]); // 1.0, -3.0
  const f64 = Buffer.alloc(16);
  f64.writeDoubleLE(0.1, 0);
  f64.writeDoubleLE(-1e300, 8);
  const mixed = decodeSafetensors(
    handBuilt(
      '{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[6,10]},"d":{"dtype":"F64","shape":[2],"data_offsets":[10,26]}}',
      Buffer.concat([f16, bf16, f64]),
    ),
  );
  t.same(Array.from(mixed.tensors.get('h')!.data), [1, -2, 0.5]);
  t.same(Array.from(mixed.tensors.get('b')!.data), [1, -3]);
  t.same(Array.from(mixed.tensors.get('d')!.data), [Math.fround(0.1), -Infinity], 'F64 narrowed to float32');
});

t.test('round trip of odd shapes', async (t) => {
  const m = new Map<string, NamedTensor>([
    ['empty', { shape: [0, 5], data: new Float32Array(0) }],
    ['v', { shape: [3], data: Float32Array.from([NaN, Infinity, -0]) }],
  ]);
  const back = decodeSafetensors(encodeSafetensors(m));
  t.same(back.tensors.get('empty')!.shape, [0, 5]);
  const v = back.tensors.get('v')!.data;
  t.ok(Number.isNaN(v[0]) && v[1] === Infinity && Object.is(v[2], -0));
});

t.test('malformed files are rejected with where and why', async (t) => {
  const good = handBuilt(JSON_HEADER, DATA);
  const cases: [string, Buffer, RegExp][] = [
    ['short', Buffer.alloc(4), /shorter than the 8-byte/],
    ['huge header length', Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), Buffer.alloc(8)]), /header length/],
    ['not json', handBuilt('{nope', Buffer.alloc(0)), /not JSON/],
    ['array header', handBuilt('[1,2]', Buffer.alloc(0)), /not a JSON object/],
    ['bad dtype', handBuilt('{"x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}', Buffer.alloc(8)), /dtype I64/],
    ['size mismatch', handBuilt('{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', Buffer.alloc(8)), /needs 12/],
    ['past the end', handBuilt('{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', Buffer.alloc(8)), /bad data_offsets/],
    ['hole', handBuilt('{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', Buffer.alloc(8)), /hole or overlap/],
    [
      'overlap',
      handBuilt('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', Buffer.alloc(8)),
      /hole or overlap/,
    ],
    ['trailing bytes', Buffer.concat([good, Buffer.alloc(4)]), /trailing bytes/],
    ['metadata not string', handBuilt('{"__metadata__":{"a":1}}', Buffer.alloc(0)), /not a string/],
  ];
  for (const [name, buf, re] of cases) {
    t.throws(() => decodeSafetensors(buf, 'f.safetensors'), SafetensorsError, name);
    try {
      decodeSafetensors(buf, 'f.safetensors');
    } catch (e) {
      t.match((e as Error).message, re, name);
      t.match((e as Error).message, /^f\.safetensors/, `${name}: says where`);
    }
  }
  t.throws(() => encodeSafetensors(new Map([['x', { shape: [2, 2], data: new Float32Array(3) }]])), /needs 4 values/);
  t.throws(() => encodeSafetensors(new Map([['__metadata__', { shape: [1], data: new Float32Array(1) }]])), /reserved/);
});

t.test('readSafetensorsFile names the path in errors', async (t) => {
  const dir = tempDir(t);
  const p = join(dir, 'bad.safetensors');
  writeSafetensorsFile(p, tensors);
  t.same(readSafetensorsFile(p).tensors.get('linear_in.bias')!.data, Float32Array.from([7, 8]));
  t.ok(existsSync(p) && readdirSync(dir).length === 1);
});
