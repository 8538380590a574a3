// uint8 batch frames: raw pixels plus the per-channel mean/std the consumer applies.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pack, unpack } from 'msgpackr';
import t from 'tap';
import { frameLayout, frameLength, maxFrameBytes, readFrame, writeFrameHeader, type FrameHeader } from '../../../src/pipeline/ring/frame.ts';
import { findPython, runPython } from '../../helpers/python.ts';
import { tempDir } from '../../helpers/tmp.ts';

const ascii = (s: string): number[] => [...Buffer.from(s, 'utf8')];
const fixstr = (s: string): number[] => [0xa0 | Buffer.byteLength(s), ...ascii(s)];
const be32 = (v: number): number[] => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
const f64 = (v: number): number[] => {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, v);
  return [0xcb, ...new Uint8Array(dv.buffer)];
};

function header(n: number, o: Partial<FrameHeader> = {}): FrameHeader {
  return {
    epoch: 2,
    step: 17,
    rank: 0,
    world: 1,
    n,
    channels: 3,
    height: 2,
    width: 2,
    keys: Array.from({ length: n }, (_, i) => `s${i}`),
    dtype: 'uint8',
    mean: [127.5, 0, 255],
    std: [63.75, 1, 300],
    ...o,
  };
}

function makeFrame(h: FrameHeader, seed = 1): { buf: Uint8Array; labels: Int32Array; images: Uint8Array } {
  const buf = new Uint8Array(frameLayout(h).totalBytes);
  const layout = writeFrameHeader(buf, h);
  const labels = new Int32Array(buf.buffer, layout.labelsOffset, h.n);
  const images = buf.subarray(layout.imagesOffset);
  for (let i = 0; i < labels.length; i++) labels[i] = seed * 100 + i;
  for (let i = 0; i < images.length; i++) images[i] = (seed * 37 + i * 11) & 255;
  return { buf, labels, images };
}

t.test('uint8 layout byte by byte: dtype, mean and std entries, 1-byte image section', (t) => {
  const h = header(2, { keys: ['a', 'bb'] });
  const layout = frameLayout(h);
  const target = new Uint8Array(layout.totalBytes + 8).fill(0xaa);
  t.same(writeFrameHeader(target, h), layout);
  const prefix = [
    0x8d, // fixmap, 13 entries
    ...fixstr('epoch'),
    2,
    ...fixstr('step'),
    17,
    ...fixstr('rank'),
    0,
    ...fixstr('world'),
    1,
    ...fixstr('shape'),
    0x94,
    2,
    3,
    2,
    2,
    ...fixstr('dtype'),
    ...fixstr('uint8'),
    ...fixstr('mean'),
    0x93,
    ...f64(127.5),
    0x00,
    0xcc,
    0xff,
    ...fixstr('std'),
    0x93,
    ...f64(63.75),
    0x01,
    0xcd,
    0x01,
    0x2c,
    ...fixstr('keys'),
    0x92,
    ...fixstr('a'),
    ...fixstr('bb'),
  ];
  const pad0 = (64 - ((prefix.length + 6 + 2 + 7 + 5) % 64)) % 64;
  const labelsOffset = prefix.length + 6 + 2 + pad0 + 7 + 5;
  const pad1 = (64 - ((labelsOffset + 8 + 6 + 2 + 7 + 5) % 64)) % 64;
  const imagesOffset = labelsOffset + 8 + 6 + 2 + pad1 + 7 + 5;
  t.equal(layout.labelsOffset, labelsOffset);
  t.equal(layout.imagesOffset, imagesOffset);
  t.equal(layout.totalBytes, imagesOffset + 2 * 3 * 2 * 2, 'one byte per pixel');
  t.same(
    [...target.subarray(0, labelsOffset)],
    [...prefix, ...fixstr('_pad0'), 0xc4, pad0, ...new Array<number>(pad0).fill(0), ...fixstr('labels'), 0xc6, ...be32(8)],
  );
  t.same(
    [...target.subarray(labelsOffset + 8, imagesOffset)],
    [...fixstr('_pad1'), 0xc4, pad1, ...new Array<number>(pad1).fill(0), ...fixstr('images'), 0xc6, ...be32(24)],
  );
  t.same([...target.subarray(imagesOffset)], new Array<number>(24 + 8).fill(0xaa), 'image payload and tail untouched');
  t.end();
});

t.test('float32 stays the default: no dtype given and dtype float32 write the same bytes', (t) => {
  const { dtype: _d, mean: _m, std: _s, ...plain } = header(3);
  const a = new Uint8Array(frameLayout(plain).totalBytes);
  const b = new Uint8Array(a.length);
  writeFrameHeader(a, plain);
  writeFrameHeader(b, { ...plain, dtype: 'float32' });
  t.ok(Buffer.from(a).equals(Buffer.from(b)));
  t.equal(readFrame(a).dtype, undefined, 'a float32 frame decodes without a dtype field, as before');
  t.end();
});

t.test('alignment and maxFrameBytes hold for uint8 frames of many shapes and statistics', (t) => {
  let checked = 0;
  const statSets: [number[], number[]][] = [
    [[0], [1]],
    [[127.5], [63.75]],
    [[-1e300], [1e-300]],
    [[123.675], [58.395]],
  ];
  for (const n of [0, 1, 3, 17, 256, 1000]) {
    for (const c of [1, 3, 4]) {
      for (const [m, s] of statSets) {
        for (const meta of [undefined, { note: 'x'.repeat(n % 40) }]) {
          const mean = Array.from({ length: c }, (_, i) => m[0]! * (i + 1));
          const std = Array.from({ length: c }, (_, i) => s[0]! * (i + 1));
          const keys = Array.from({ length: n }, (_, i) => `${i}`.padStart(9, '0'));
          const h = header(n, { channels: c, height: 5, width: 3, keys, mean, std, ...(meta ? { meta } : {}) });
          const l = frameLayout(h);
          const max = maxFrameBytes({ n, channels: c, height: 5, width: 3, maxKeyBytes: 9, dtype: 'uint8', ...(meta ? { meta } : {}) });
          const what = `n=${n} c=${c} mean=${mean[0]} meta=${Boolean(meta)}`;
          if (l.labelsOffset % 64 || l.imagesOffset % 64) t.fail(`unaligned: ${what}`);
          if (l.totalBytes !== l.imagesOffset + n * c * 15) t.fail(`total: ${what}`);
          if (max < l.totalBytes) t.fail(`maxFrameBytes ${max} < ${l.totalBytes}: ${what}`);
          const { buf, images } = makeFrame(h);
          const f = readFrame(buf);
          if (f.dtype !== 'uint8' || f.images.length !== images.length || Buffer.compare(Buffer.from(f.images), Buffer.from(images)) !== 0)
            t.fail(`round trip: ${what}`);
          if (f.dtype === 'uint8' && (f.mean.join() !== mean.join() || f.std.join() !== std.join())) t.fail(`stats: ${what}`);
          if (frameLength(buf) !== l.totalBytes) t.fail(`frameLength: ${what}`);
          checked++;
        }
      }
    }
  }
  t.ok(checked >= 144, `${checked} layouts checked`);
  t.ok(
    maxFrameBytes({ n: 64, channels: 3, height: 8, width: 8, maxKeyBytes: 9, dtype: 'uint8' }) <
      maxFrameBytes({ n: 64, channels: 3, height: 8, width: 8, maxKeyBytes: 9 }),
    'a uint8 slot is smaller',
  );
  t.end();
});

t.test('readFrame: zero-copy uint8 view, also unaligned; msgpackr agrees', (t) => {
  const h = header(4, { channels: 3, height: 3, width: 5, meta: { m: 1 } });
  const { buf, labels, images } = makeFrame(h, 3);
  const f = readFrame(buf);
  t.equal(f.dtype, 'uint8');
  if (f.dtype !== 'uint8') return t.end();
  t.ok(f.images instanceof Uint8Array);
  t.equal(f.images.buffer, buf.buffer, 'a view of the frame');
  t.equal(f.images.byteOffset, f.layout.imagesOffset);
  t.same(f.mean, [127.5, 0, 255]);
  t.same(f.std, [63.75, 1, 300]);
  t.same([...f.labels], [...labels]);
  t.same(f.meta, { m: 1 });
  const odd = new Uint8Array(buf.length + 1).subarray(1);
  odd.set(buf);
  const o = readFrame(odd);
  t.equal(o.images.buffer, odd.buffer, 'bytes need no alignment: still a view');
  t.same([...o.images], [...images]);

  const doc = unpack(buf) as Record<string, unknown>;
  t.same(Object.keys(doc), ['epoch', 'step', 'rank', 'world', 'shape', 'dtype', 'mean', 'std', 'keys', 'meta', '_pad0', 'labels', '_pad1', 'images']);
  t.equal(doc['dtype'], 'uint8');
  t.same(doc['mean'], [127.5, 0, 255]);
  t.ok(Buffer.from(doc['images'] as Uint8Array).equals(Buffer.from(images)));
  t.end();
});

t.test('invalid uint8 headers and documents are refused', (t) => {
  const bad: [string, Partial<FrameHeader>][] = [
    ['no mean', { mean: undefined }],
    ['no std', { std: undefined }],
    ['mean per channel', { mean: [1, 2] }],
    ['std of zero', { std: [1, 0, 1] }],
    ['negative std', { std: [1, -2, 1] }],
    ['NaN mean', { mean: [1, NaN, 1] }],
    ['float32 with stats', { dtype: 'float32' }],
    ['unknown dtype', { dtype: 'int16' as 'uint8' }],
  ];
  for (const [what, o] of bad) {
    t.throws(() => frameLayout(header(2, o)), { name: 'FrameError', code: 'invalid' }, what);
  }
  const doc = unpack(makeFrame(header(2)).buf) as Record<string, unknown>;
  const { mean: _m, ...noMean } = doc;
  t.throws(() => readFrame(pack(noMean)), { name: 'FrameError', code: 'invalid', message: /needs "mean"/ });
  t.throws(() => readFrame(pack({ ...doc, std: [1, 0, 1] })), { name: 'FrameError', code: 'invalid', message: /"std"/ });
  t.throws(() => readFrame(pack({ ...doc, mean: [1, 'x', 1] })), { name: 'FrameError', code: 'invalid', message: /"mean"/ });
  t.throws(
    () => readFrame(pack({ ...doc, images: new Uint8Array(2 * 12 * 4) })),
    { name: 'FrameError', code: 'invalid', message: /shape needs 24/ },
    'float-sized section',
  );
  t.end();
});

const python = findPython(['msgpack', 'numpy']);

t.test('Python msgpack + numpy read uint8 and float32 frames with the README recipe', { skip: python ? false : 'no python with msgpack and numpy' }, (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'frames.msgpack');
  const u = makeFrame(header(3, { channels: 3, height: 2, width: 4 }), 5);
  const { dtype: _d, mean: _m, std: _s, ...plain } = header(2, { channels: 3, height: 2, width: 4, step: 18 });
  const fbuf = new Uint8Array(frameLayout(plain).totalBytes);
  const fl = writeFrameHeader(fbuf, plain);
  const fimg = new Float32Array(fbuf.buffer, fl.imagesOffset, 2 * 24);
  fimg.forEach((_, i) => (fimg[i] = i / 4 - 3));
  writeFileSync(file, Buffer.concat([u.buf, fbuf]));
  // The README's reading example, normalising uint8 frames to what a float32 frame would hold.
  const script = String.raw`
import json, sys
import msgpack, numpy as np
out = []
for doc in msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False, max_bin_len=2**32 - 1):
    n, c, h, w = doc["shape"]
    if doc["dtype"] == "uint8":
        pixels = np.frombuffer(doc["images"], np.uint8).reshape(n, c, h, w)
        mean = np.asarray(doc["mean"], np.float32).reshape(1, c, 1, 1)
        std = np.asarray(doc["std"], np.float32).reshape(1, c, 1, 1)
        images = (pixels - mean) / std
    else:
        images = np.frombuffer(doc["images"], "<f4").reshape(n, c, h, w)
    labels = np.frombuffer(doc["labels"], "<i4")
    out.append({"dtype": doc["dtype"], "shape": list(images.shape), "images": images.astype(np.float64).ravel().tolist(), "labels": labels.tolist()})
print(json.dumps(out))
`;
  const got = JSON.parse(runPython(python!, script, [file]).toString('utf8')) as { dtype: string; shape: number[]; images: number[]; labels: number[] }[];
  t.equal(got.length, 2);
  t.equal(got[0]!.dtype, 'uint8');
  t.same(got[0]!.shape, [3, 3, 2, 4]);
  t.same(got[0]!.labels, [...u.labels]);
  const mean = [127.5, 0, 255];
  const std = [63.75, 1, 300];
  let worst = 0;
  got[0]!.images.forEach((v, i) => {
    const c = Math.floor(i / 8) % 3;
    worst = Math.max(worst, Math.abs(v - (u.images[i]! - mean[c]!) / std[c]!));
  });
  t.ok(worst < 1e-5, `uint8 frame normalised in numpy, max error ${worst}`);
  t.equal(got[1]!.dtype, 'float32');
  t.same(got[1]!.images, [...fimg]);
  t.end();
});
