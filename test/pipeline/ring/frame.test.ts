// The batch frame, byte by byte and through independent decoders (msgpackr, Python msgpack).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pack, unpack, unpackMultiple } from 'msgpackr';
import t from 'tap';
import { FrameError, frameLayout, frameLength, maxFrameBytes, readFrame, writeFrameHeader, type FrameHeader } from '../../../src/pipeline/ring/frame.ts';
import { findPython, runPython } from '../../helpers/python.ts';
import { tempDir } from '../../helpers/tmp.ts';

const ascii = (s: string): number[] => [...Buffer.from(s, 'utf8')];
const fixstr = (s: string): number[] => [0xa0 | Buffer.byteLength(s), ...ascii(s)];
const be32 = (v: number): number[] => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];

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
    ...o,
  };
}

/** A complete frame in a fresh buffer, with deterministic payloads derived from `seed`. */
function makeFrame(h: FrameHeader, seed = 1, pad = 0): { buf: Uint8Array; labels: Int32Array; images: Float32Array } {
  const buf = new Uint8Array(frameLayout(h).totalBytes + pad);
  const layout = writeFrameHeader(buf, h);
  const labels = new Int32Array(buf.buffer, buf.byteOffset + layout.labelsOffset, h.n);
  const images = new Float32Array(buf.buffer, buf.byteOffset + layout.imagesOffset, h.n * h.channels * h.height * h.width);
  for (let i = 0; i < labels.length; i++) labels[i] = seed * 1000 + i - 500;
  for (let i = 0; i < images.length; i++) images[i] = (seed * 31 + i) / 4;
  return { buf, labels, images };
}

function bytesOf(a: Int32Array | Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

t.test('layout byte by byte for a small frame', (t) => {
  const h = header(2, { step: 200, rank: 1, world: 4, keys: ['a', 'bb'] });
  const layout = frameLayout(h);
  const target = new Uint8Array(layout.totalBytes + 16).fill(0xaa);
  t.same(writeFrameHeader(target, h), layout, 'frameLayout predicts writeFrameHeader');

  // The expected document, derived here independently of the implementation.
  const prefix = [
    0x8b, // fixmap, 11 entries
    ...fixstr('epoch'),
    0x02,
    ...fixstr('step'),
    0xcc,
    200,
    ...fixstr('rank'),
    0x01,
    ...fixstr('world'),
    0x04,
    ...fixstr('shape'),
    0x94,
    2,
    3,
    2,
    2,
    ...fixstr('dtype'),
    ...fixstr('float32'),
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
  t.equal(layout.totalBytes, imagesOffset + 2 * 3 * 2 * 2 * 4);
  t.equal(layout.headerBytes, layout.totalBytes - 8 - 96);

  const expectHead = [...prefix, ...fixstr('_pad0'), 0xc4, pad0, ...new Array<number>(pad0).fill(0), ...fixstr('labels'), 0xc6, ...be32(8)];
  t.same([...target.subarray(0, labelsOffset)], expectHead, 'map header, small entries, pad0, labels bin32 header');
  t.same([...target.subarray(labelsOffset, labelsOffset + 8)], new Array<number>(8).fill(0xaa), 'labels payload untouched');
  const expectMid = [...fixstr('_pad1'), 0xc4, pad1, ...new Array<number>(pad1).fill(0), ...fixstr('images'), 0xc6, ...be32(96)];
  t.same([...target.subarray(labelsOffset + 8, imagesOffset)], expectMid, 'pad1 and images bin32 header');
  t.same([...target.subarray(imagesOffset)], new Array<number>(96 + 16).fill(0xaa), 'images payload and tail untouched');
  t.end();
});

t.test('meta makes a 12-entry map, placed before the padding', (t) => {
  const h = header(1, { meta: { dataset: 'cifar10', seed: -3, lr: 0.5, flip: true } });
  const { buf } = makeFrame(h);
  t.equal(buf[0], 0x8c);
  const doc = unpack(buf) as Record<string, unknown>;
  t.same(Object.keys(doc), ['epoch', 'step', 'rank', 'world', 'shape', 'dtype', 'keys', 'meta', '_pad0', 'labels', '_pad1', 'images']);
  t.same(doc.meta, { dataset: 'cifar10', seed: -3, lr: 0.5, flip: true });
  t.same(readFrame(buf).meta, h.meta);
  t.end();
});

t.test('meta numbers at every encoding boundary size and round-trip exactly', (t) => {
  const values = [
    0,
    127,
    128,
    255,
    256,
    65535,
    65536,
    2 ** 32 - 1,
    2 ** 32,
    2 ** 53 - 1,
    -1,
    -32,
    -33,
    -128,
    -129,
    -32768,
    -32769,
    -(2 ** 31),
    -(2 ** 31) - 1,
    0.1,
    -2.5,
    Infinity,
    1e300,
  ];
  const meta = Object.fromEntries(values.map((v, i) => [`v${i}`, v]));
  const h = header(1, { meta: { ...meta, long: 'é'.repeat(200), yes: true, no: false } });
  const { buf } = makeFrame(h); // writeFrameHeader checks its own layout prediction
  t.same(readFrame(buf).meta, h.meta);
  t.same((unpack(buf) as { meta: unknown }).meta, h.meta, 'msgpackr agrees');
  t.end();
});

t.test('alignment, padding and entry order hold for many n and key lengths', (t) => {
  let checked = 0;
  for (const n of [0, 1, 2, 3, 7, 15, 16, 17, 31, 33, 100, 255, 256, 1000, 70_000]) {
    for (const keyLen of [0, 1, 5, 31, 32, 60, 255, 256]) {
      for (const withMeta of [false, true]) {
        if (n * keyLen > 2_000_000) continue;
        const unit = keyLen % 3 === 0 ? 'é' : 'k'; // multi-byte UTF-8 keys too
        const keys = Array.from({ length: n }, (_, i) => `${i}`.padEnd(Math.max(1, Math.ceil(keyLen / (unit === 'é' ? 2 : 1))), unit));
        const maxKeyBytes = Math.max(...keys.map((k) => Buffer.byteLength(k)), 0);
        const meta = withMeta ? { run: 'x'.repeat(keyLen), n } : undefined;
        const h = header(n, { channels: 1, height: 1, width: 3, keys, step: n * 7 + keyLen, ...(meta ? { meta } : {}) });
        const buf = new Uint8Array(maxFrameBytes({ n, channels: 1, height: 1, width: 3, maxKeyBytes, ...(meta ? { meta } : {}) }));
        const l = writeFrameHeader(buf, h);
        const what = `n=${n} keyLen=${keyLen} meta=${withMeta}`;
        if (l.labelsOffset % 64 !== 0 || l.imagesOffset % 64 !== 0) t.fail(`unaligned: ${what} ${JSON.stringify(l)}`);
        if (l.totalBytes !== l.imagesOffset + n * 12) t.fail(`total: ${what}`);
        if (l.totalBytes > buf.length) t.fail(`maxFrameBytes too small: ${what}`);
        // Section headers sit right before the sections.
        const lh = buf.subarray(l.labelsOffset - 12, l.labelsOffset);
        const ih = buf.subarray(l.imagesOffset - 12, l.imagesOffset);
        if (Buffer.compare(lh, Buffer.from([...fixstr('labels'), 0xc6, ...be32(4 * n)])) !== 0) t.fail(`labels header: ${what}`);
        if (Buffer.compare(ih, Buffer.from([...fixstr('images'), 0xc6, ...be32(12 * n)])) !== 0) t.fail(`images header: ${what}`);
        // pad1 starts right after the labels and is shorter than 64 bytes.
        const p1 = l.labelsOffset + 4 * n;
        if (Buffer.compare(buf.subarray(p1, p1 + 7), Buffer.from([...fixstr('_pad1'), 0xc4])) !== 0) t.fail(`pad1 entry: ${what}`);
        if (buf[p1 + 7]! >= 64 || p1 + 8 + buf[p1 + 7]! + 12 !== l.imagesOffset) t.fail(`pad1 size: ${what}`);
        if (frameLength(buf) !== l.totalBytes) t.fail(`frameLength: ${what}`);
        if (n <= 1000) {
          const keysOrder = Object.keys(unpack(buf.subarray(0, l.totalBytes)) as object);
          if (keysOrder.at(-1) !== 'images' || keysOrder.at(-3) !== 'labels') t.fail(`entry order: ${what} ${keysOrder.join(',')}`);
          const back = readFrame(buf);
          if (back.keys.join('\n') !== keys.join('\n') || back.step !== h.step) t.fail(`round trip: ${what}`);
        }
        checked++;
      }
    }
  }
  t.ok(checked > 200, `${checked} layouts checked`);
  t.end();
});

t.test('the paper-scale batch (65,536 x 3 x 64 x 64 float32, 3.2 GB) fits bin32 and aligns', (t) => {
  const n = 65_536;
  const h = header(n, { channels: 3, height: 64, width: 64, keys: Array.from({ length: n }, (_, i) => `in21k/${i}`.padStart(24, '0')) });
  const l = frameLayout(h);
  t.equal(l.imagesOffset % 64, 0);
  t.equal(l.labelsOffset % 64, 0);
  t.equal(l.totalBytes, l.imagesOffset + 3_221_225_472);
  t.ok(maxFrameBytes({ n, channels: 3, height: 64, width: 64, maxKeyBytes: 24 }) >= l.totalBytes);
  t.throws(
    () => frameLayout(header(n * 2, { channels: 3, height: 64, width: 64, keys: new Array<string>(n * 2).fill('k') })),
    { name: 'FrameError', code: 'invalid' },
    'a section over 4 GiB is refused',
  );
  t.end();
});

t.test('msgpackr decodes a frame independently', (t) => {
  const h = header(5, { epoch: 9, step: 70_000, rank: 2, world: 3, channels: 3, height: 4, width: 5 });
  const { buf, labels, images } = makeFrame(h, 3);
  const doc = unpack(buf) as Record<string, unknown>;
  t.equal(doc.epoch, 9);
  t.equal(doc.step, 70_000);
  t.equal(doc.rank, 2);
  t.equal(doc.world, 3);
  t.same(doc.shape, [5, 3, 4, 5]);
  t.equal(doc.dtype, 'float32');
  t.same(doc.keys, h.keys);
  t.ok(Buffer.from(doc.labels as Uint8Array).equals(bytesOf(labels)), 'labels bytes');
  t.ok(Buffer.from(doc.images as Uint8Array).equals(bytesOf(images)), 'images bytes');
  t.ok(
    (doc._pad0 as Uint8Array).every((b) => b === 0),
    'padding is zeros',
  );
  t.end();
});

t.test('readFrame reads frames written by msgpackr (other key order, bin8, unaligned)', (t) => {
  const labels = new Int32Array([7, -1]);
  const images = new Float32Array(2 * 1 * 2 * 1).map((_, i) => i + 0.25);
  const buf = pack({
    images: Buffer.from(images.buffer),
    labels: Buffer.from(labels.buffer),
    keys: ['x', 'y'],
    dtype: 'float32',
    shape: [2, 1, 2, 1],
    world: 1,
    rank: 0,
    step: 5,
    epoch: 1,
    extra: [1, { a: null }],
  });
  const f = readFrame(new Uint8Array(buf));
  t.same([...f.labels], [7, -1]);
  t.same([...f.images], [...images]);
  t.equal(f.step, 5);
  t.equal(f.layout.totalBytes, buf.length);
  t.end();
});

t.test('readFrame round trip: zero-copy when aligned, a copy otherwise', (t) => {
  const h = header(4, { meta: { note: 'ok' } });
  const { buf, labels, images } = makeFrame(h, 5);
  const f = readFrame(buf);
  t.same({ ...f, labels: [...f.labels], images: [...f.images], layout: undefined }, { ...h, labels: [...labels], images: [...images], layout: undefined });
  t.equal(f.images.buffer, buf.buffer, 'images alias the frame bytes');
  t.equal(f.labels.buffer, buf.buffer, 'labels alias the frame bytes');
  t.equal(f.images.byteOffset, f.layout.imagesOffset);

  // In shared memory, as in a ring slot.
  const shared = new Uint8Array(new SharedArrayBuffer(buf.length + 64), 64);
  shared.set(buf);
  const s = readFrame(shared);
  t.equal(s.images.buffer, shared.buffer);
  t.same([...s.images], [...images]);

  // Shifted by one byte: the views cannot be aligned, so they are copies with the same values.
  const odd = new Uint8Array(buf.length + 1).subarray(1);
  odd.set(buf);
  const o = readFrame(odd);
  t.not(o.images.buffer, odd.buffer);
  t.same([...o.images], [...images]);
  t.same([...o.labels], [...labels]);
  t.end();
});

t.test('FrameError on truncation at every length, and on garbage', (t) => {
  const { buf } = makeFrame(header(3, { keys: ['k0', 'k1', 'ключ'] }), 2);
  let bad = 0;
  for (let len = 0; len < buf.length; len++) {
    for (const fn of [readFrame, frameLength]) {
      try {
        fn(buf.subarray(0, len));
        bad++;
      } catch (e) {
        if (!(e instanceof FrameError) || e.code !== 'truncated' || e.offset === undefined || e.offset > len) bad++;
      }
    }
  }
  t.equal(bad, 0, `every prefix of ${buf.length} bytes is refused as truncated`);

  t.throws(() => readFrame(new Uint8Array([0x93, 1, 2, 3])), { name: 'FrameError', code: 'malformed', offset: 0 }, 'not a map');
  t.throws(() => readFrame(new Uint8Array([0x81, 0xc1])), { name: 'FrameError', code: 'malformed', offset: 1 }, 'never-used byte');
  t.throws(() => readFrame(new Uint8Array([0x81, 0x01, 0x02])), { name: 'FrameError', code: 'malformed', offset: 1 }, 'non-string key');
  t.throws(() => readFrame(new Uint8Array([0xdf, 0xff, 0xff, 0xff, 0xff])), { name: 'FrameError', code: 'truncated' }, 'huge count');
  t.throws(() => readFrame(new Uint8Array([0x81, 0xa2, 0xc3, 0x28, 0x00])), { name: 'FrameError', code: 'malformed', offset: 2 }, 'invalid UTF-8');

  const doc = unpack(buf) as Record<string, unknown>;
  t.throws(() => readFrame(pack({ ...doc, dtype: 'uint8' })), { name: 'FrameError', code: 'invalid' }, 'wrong dtype');
  t.throws(() => readFrame(pack({ ...doc, shape: [3, 3, 2, 3] })), { name: 'FrameError', code: 'invalid' }, 'sections do not match shape');
  const { keys: _k, ...noKeys } = doc;
  t.throws(() => readFrame(pack(noKeys)), { name: 'FrameError', code: 'invalid', message: /missing key "keys"/ });
  t.throws(() => readFrame(pack({ ...doc, labels: [1, 2, 3] })), { name: 'FrameError', code: 'invalid', message: /"labels" must be bin/ });
  // The same key twice, written by hand (a JS object cannot hold it).
  const dup = Buffer.concat([Buffer.from([0x82]), Buffer.from(fixstr('step')), Buffer.from([1]), Buffer.from(fixstr('step')), Buffer.from([2])]);
  t.throws(() => readFrame(dup), { name: 'FrameError', code: 'invalid', message: /duplicate/, offset: 7 });

  // Random damage anywhere in the structure: a FrameError or a successful parse, never anything else.
  let seed = 12345;
  const rand = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / (1 << 24);
  let other = 0;
  const layout = readFrame(buf).layout;
  for (let i = 0; i < 3000; i++) {
    const copy = buf.slice();
    const at = Math.floor(rand() * layout.imagesOffset);
    copy[at] = Math.floor(rand() * 256);
    try {
      readFrame(copy);
      frameLength(copy);
    } catch (e) {
      if (!(e instanceof FrameError)) other++;
    }
  }
  t.equal(other, 0, 'damaged frames raise only FrameError');
  t.end();
});

t.test('frameLength walks back-to-back frames', (t) => {
  const frames = [makeFrame(header(1), 1).buf, makeFrame(header(9, { step: 18 }), 2).buf, makeFrame(header(0, { step: 19 }), 3).buf];
  const all = Buffer.concat(frames);
  const steps: number[] = [];
  let off = 0;
  while (off < all.length) {
    const len = frameLength(all.subarray(off));
    steps.push(readFrame(all.subarray(off)).step);
    off += len;
  }
  t.equal(off, all.length);
  t.same(steps, [17, 18, 19]);
  t.same(
    unpackMultiple(all).map((d) => (d as { step: number }).step),
    [17, 18, 19],
    'msgpackr agrees',
  );
  t.end();
});

t.test('writeFrameHeader refuses what it cannot encode', (t) => {
  const h = header(2);
  t.throws(() => writeFrameHeader(new Uint8Array(frameLayout(h).totalBytes - 1), h), { name: 'FrameError', code: 'too-small' });
  t.throws(() => writeFrameHeader(new Uint8Array(4096), { ...h, keys: ['one'] }), { name: 'FrameError', code: 'invalid' });
  t.throws(() => writeFrameHeader(new Uint8Array(4096), { ...h, epoch: -1 }), { name: 'FrameError', code: 'invalid' });
  t.throws(() => writeFrameHeader(new Uint8Array(4096), { ...h, step: 2 ** 32 }), { name: 'FrameError', code: 'invalid' });
  t.throws(() => writeFrameHeader(new Uint8Array(4096), { ...h, rank: 1, world: 1 }), { name: 'FrameError', code: 'invalid' });
  t.throws(() => maxFrameBytes({ n: 1.5, channels: 1, height: 1, width: 1, maxKeyBytes: 1 }), { name: 'FrameError' });
  t.end();
});

const python = findPython(['msgpack', 'numpy']);

t.test('Python msgpack + numpy read a file of back-to-back frames', { skip: python ? false : 'no python with msgpack and numpy' }, (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'frames.msgpack');
  const hs = [
    header(4, { epoch: 0, step: 10, channels: 3, height: 4, width: 4, meta: { source: 'test' } }),
    header(1, { epoch: 0, step: 11, rank: 1, world: 2, channels: 1, height: 2, width: 3, keys: ['ünï'] }),
    header(7, { epoch: 1, step: 12, channels: 2, height: 3, width: 5 }),
  ];
  const made = hs.map((h, i) => makeFrame(h, i + 1));
  writeFileSync(file, Buffer.concat(made.map((m) => m.buf)));
  const script = String.raw`
import json, sys
import msgpack, numpy as np
out = []
with open(sys.argv[1], 'rb') as f:
    for d in msgpack.Unpacker(f, raw=False):
        shape = tuple(d['shape'])
        img = np.frombuffer(d['images'], dtype='<f4').reshape(shape)
        lab = np.frombuffer(d['labels'], dtype='<i4')
        out.append({
            'order': list(d.keys()), 'epoch': d['epoch'], 'step': d['step'], 'rank': d['rank'],
            'shape': list(img.shape), 'dtype': d['dtype'], 'keys': d['keys'], 'meta': d.get('meta'),
            'labels': lab.tolist(), 'first': float(img.flat[0]), 'last': float(img[-1, -1, -1, -1]),
            'sum': float(img.astype(np.float64).sum()),
        })
print(json.dumps(out))
`;
  const got = JSON.parse(runPython(python!, script, [file]).toString('utf8')) as Array<Record<string, unknown>>;
  t.equal(got.length, 3);
  got.forEach((g, i) => {
    const h = hs[i]!;
    const { labels, images } = made[i]!;
    t.equal((g.order as string[]).at(-1), 'images', 'images is the last entry');
    t.same(g.shape, [h.n, h.channels, h.height, h.width]);
    t.equal(g.step, h.step);
    t.equal(g.epoch, h.epoch);
    t.equal(g.rank, h.rank);
    t.equal(g.dtype, 'float32');
    t.same(g.keys, h.keys);
    t.same(g.meta, h.meta ?? null);
    t.same(g.labels, [...labels]);
    t.equal(g.first, images[0]);
    t.equal(g.last, images.at(-1));
    t.equal(
      g.sum,
      images.reduce((s, v) => s + v, 0),
    );
  });
  t.end();
});

t.test('readFrame reads a frame built by Python msgpack', { skip: python ? false : 'no python with msgpack and numpy' }, (t) => {
  const script = String.raw`
import sys, msgpack, numpy as np
img = (np.arange(2 * 3 * 2 * 2, dtype='<f4') / 8).tobytes()
lab = np.array([5, -6], dtype='<i4').tobytes()
doc = {'epoch': 3, 'step': 2**33, 'rank': 0, 'world': 1, 'shape': [2, 3, 2, 2], 'dtype': 'float32',
       'keys': ['p', 'q'], 'meta': {'from': 'python', 'x': 1.5}, 'labels': lab, 'images': img}
sys.stdout.buffer.write(msgpack.packb(doc, use_bin_type=True))
`;
  const bytes = new Uint8Array(runPython(python!, script));
  const f = readFrame(bytes);
  t.equal(f.step, 2 ** 33, 'uint64 within 2^53 decodes');
  t.same([...f.labels], [5, -6]);
  t.same(
    [...f.images],
    Array.from({ length: 24 }, (_, i) => i / 8),
  );
  t.same(f.meta, { from: 'python', x: 1.5 });
  t.equal(frameLength(bytes), bytes.length);
  t.end();
});
