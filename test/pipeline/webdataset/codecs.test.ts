import { gzipSync } from 'node:zlib';
import t from 'tap';
import {
  decodeCls,
  decodeJson,
  decodeNpy,
  decodeSample,
  encodeCls,
  encodeJson,
  encodeNpy,
  npyHeader,
  type NpyArray,
} from '../../../src/pipeline/webdataset/codecs.ts';
import type { WdsSample } from '../../../src/pipeline/webdataset/samples.ts';

const text = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

t.test('cls: decimal ASCII without newline; decoding is Python int()', async (t) => {
  t.equal(text(encodeCls(7)), '7');
  t.equal(text(encodeCls(0)), '0');
  t.equal(text(encodeCls(21841)), '21841');
  t.equal(text(encodeCls(-1)), '-1');
  t.throws(() => encodeCls(1.5), { name: 'SampleFormatError' });
  t.throws(() => encodeCls(Number.NaN), { name: 'SampleFormatError' });
  for (const [s, n] of [
    ['7', 7],
    [' 42\n', 42],
    ['\t-3 ', -3],
    ['+5', 5],
    ['1_000', 1000],
    ['007', 7],
  ] as const) {
    t.equal(decodeCls(Buffer.from(s)), n, JSON.stringify(s));
  }
  for (const s of ['', '1.5', 'abc', '1 2', '0x10', '_1', '1__0', '99999999999999999999']) {
    t.throws(() => decodeCls(Buffer.from(s), { url: 'u.tar', key: 'k' }), { name: 'SampleFormatError', url: 'u.tar', key: 'k' }, JSON.stringify(s));
  }
});

t.test('json round trip and errors', async (t) => {
  const v = { label: 3, name: 'ködé', nested: [1, null, true] };
  t.strictSame(decodeJson(encodeJson(v)), v);
  t.equal(text(encodeJson([1, 2])), '[1,2]');
  t.throws(() => decodeJson(Buffer.from('{nope')), { name: 'SampleFormatError', message: /invalid JSON/ });
  t.throws(() => decodeJson(Uint8Array.of(0x22, 0xff, 0x22)), { name: 'SampleFormatError' }, 'invalid UTF-8');
  t.throws(() => encodeJson(undefined), { name: 'SampleFormatError' });
});

t.test('npyHeader writes numpy.save text, padded to 64 bytes', async (t) => {
  const h = npyHeader([64, 48, 3]);
  t.strictSame([...h.subarray(0, 8)], [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 'magic + version 1.0');
  t.equal(h.length % 64, 0);
  t.equal(new DataView(h.buffer).getUint16(8, true), h.length - 10, 'header length field');
  const dict = text(h.subarray(10));
  t.match(dict, /^\{'descr': '\|u1', 'fortran_order': False, 'shape': \(64, 48, 3\), \} +\n$/);
  t.equal(dict.length, 118);
  t.equal(h[h.length - 1], 0x0a);
  t.match(text(npyHeader([5])), /'shape': \(5,\), \}/, '1-d tuple has a trailing comma');
  t.match(text(npyHeader([])), /'shape': \(\), \}/, '0-d');
  t.match(text(npyHeader([2, 2], '<f4')), /'descr': '<f4'/);
  t.throws(() => npyHeader([2, -1]), { name: 'SampleFormatError' });
  t.throws(() => npyHeader([2.5]), { name: 'SampleFormatError' });
  t.throws(() => npyHeader([1], '>f4' as '<f4'), { name: 'SampleFormatError' });
});

t.test('encodeNpy / decodeNpy round trip; data is a view', async (t) => {
  const data = Uint8Array.from({ length: 28 * 28 }, (_, i) => i & 0xff);
  const npy = encodeNpy(data, [28, 28, 1]);
  const arr: NpyArray = decodeNpy(npy);
  t.strictSame(arr.shape, [28, 28, 1]);
  t.equal(arr.dtype, '|u1');
  t.equal(arr.fortranOrder, false);
  t.equal(arr.dataOffset, 128);
  t.strictSame(arr.data, data);
  t.equal(arr.data.buffer, npy.buffer, 'no copy');
  const f = new Float32Array([1.5, -2, 0.25]);
  const fa = decodeNpy(encodeNpy(new Uint8Array(f.buffer), [3], '<f4'));
  t.strictSame(new Float32Array(Uint8Array.from(fa.data).buffer), f);
  t.throws(() => encodeNpy(new Uint8Array(5), [2, 3]), { name: 'SampleFormatError', message: /needs 6/ });
  const scalar = decodeNpy(encodeNpy(new Uint8Array(8), [], '<i8'));
  t.strictSame(scalar.shape, []);
  t.equal(scalar.data.length, 8);
});

t.test('decodeNpy rejects what it cannot represent', async (t) => {
  const npy = encodeNpy(new Uint8Array(12), [3, 4]);
  const where = { url: 'x.tar', key: 'k7' };
  t.throws(() => decodeNpy(npy.subarray(0, npy.length - 1), where), { name: 'SampleFormatError', message: /truncated .npy data/, key: 'k7' });
  t.throws(() => decodeNpy(npy.subarray(0, 40), where), { name: 'SampleFormatError', message: /truncated .npy header/ });
  t.throws(() => decodeNpy(Buffer.from('PK\x03\x04 not npy'), where), { name: 'SampleFormatError', message: /bad magic/ });
  const fortran = Buffer.from(npy);
  fortran.write('True ', fortran.indexOf('False'), 'latin1');
  t.throws(() => decodeNpy(fortran), { name: 'SampleFormatError', message: /Fortran/ });
  const obj = Buffer.from(npy);
  obj.write("|O1'", obj.indexOf('|u1'), 'latin1');
  t.throws(() => decodeNpy(obj), { name: 'SampleFormatError', message: /dtype/ });
  const v9 = Buffer.from(npy);
  v9[6] = 9;
  t.throws(() => decodeNpy(v9), { name: 'SampleFormatError', message: /version 9/ });
});

t.test('decodeNpy reads format 2.0 headers', async (t) => {
  const dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }";
  const hlen = 64 * 2 - 12;
  const buf = Buffer.alloc(12 + hlen + 24);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 2, 0]).copy(buf, 0);
  buf.writeUInt32LE(hlen, 8);
  buf.write(dict.padEnd(hlen - 1, ' ') + '\n', 12, 'latin1');
  for (let i = 0; i < 6; i++) buf.writeInt32LE(i * 10, 12 + hlen + i * 4);
  const arr = decodeNpy(buf);
  t.strictSame(arr.shape, [2, 3]);
  t.equal(arr.dataOffset, 128);
  t.equal(Buffer.from(arr.data).readInt32LE(20), 50);
});

t.test('decodeSample applies webdataset default decoders, leaving images as bytes', async (t) => {
  const jpg = Buffer.from([0xff, 0xd8, 0xff, 0xe0]);
  const npy = Buffer.from(encodeNpy(Uint8Array.of(1, 2, 3, 4), [2, 2]));
  const s: WdsSample = {
    __key__: 'k',
    __url__: 'u.tar',
    cls: Buffer.from('3'),
    cls2: Buffer.from(' 12\n'),
    id: Buffer.from('99'),
    txt: Buffer.from('héllo'),
    json: Buffer.from('{"a": [1, 2]}'),
    'seg.json': Buffer.from('{"b": 1}'),
    'json.gz': gzipSync(Buffer.from('{"z": true}')),
    'txt.gz': gzipSync(Buffer.from('zipped')),
    npy,
    jpg,
    'seg.png': Buffer.from('png'),
    bin: Buffer.from('raw'),
  };
  const d = decodeSample(s, { images: 'bytes' });
  t.equal(d['__key__'], 'k');
  t.equal(d['__url__'], 'u.tar');
  t.equal(d['cls'], 3);
  t.equal(d['cls2'], 12);
  t.equal(d['id'], 99);
  t.equal(d['txt'], 'héllo');
  t.strictSame(d['json'], { a: [1, 2] });
  t.strictSame(d['seg.json'], { b: 1 }, 'last extension component decides');
  t.strictSame(d['json.gz'], { z: true }, 'gunzipped, then decoded by the inner extension');
  t.equal(d['txt.gz'], 'zipped');
  t.strictSame((d['npy'] as NpyArray).shape, [2, 2]);
  t.equal(d['jpg'], jpg, 'images stay bytes');
  t.strictSame(d['seg.png'], Buffer.from('png'));
  t.strictSame(d['bin'], Buffer.from('raw'));
  t.throws(() => decodeSample({ __key__: 'k', __url__: 'u', cls: Buffer.from('x') }), { name: 'SampleFormatError', key: 'k', url: 'u', member: 'k.cls' });
  t.throws(() => decodeSample({ __key__: 'k', __url__: 'u', 'cls.gz': Buffer.from('not gzip') }), { name: 'SampleFormatError', message: /gunzip/ });
});
