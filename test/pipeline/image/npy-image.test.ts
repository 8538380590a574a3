import t from 'tap';
import { parseNpyImage } from '../../../src/pipeline/image/npy-image.ts';
import { encodeNpy } from '../../../src/pipeline/webdataset/codecs.ts';

t.test('npy fast path reads our shards and rejects what it cannot', async (t) => {
  const data = Uint8Array.from({ length: 24 }, (_, i) => i);
  const img = parseNpyImage(encodeNpy(data, [2, 4, 3]));
  t.same([img.width, img.height, img.channels], [4, 2, 3]);
  t.same([...img.data], [...data]);
  const gray = parseNpyImage(encodeNpy(data.subarray(0, 8), [2, 4]));
  t.equal(gray.channels, 1);
  t.throws(() => parseNpyImage(Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])), /bad magic/);
  t.throws(() => parseNpyImage(encodeNpy(data, [2, 4, 3]).subarray(0, 130)), /truncated \.npy data/);
  t.throws(() => parseNpyImage(encodeNpy(data, [24])), /is not H x W/);
  t.throws(() => parseNpyImage(encodeNpy(new Uint8Array(16), [2, 2], '<f4')), /not uint8/);
});

t.test('the last header is remembered: only byte-identical headers skip the parse', async (t) => {
  const a = Uint8Array.from({ length: 24 }, (_, i) => i);
  const first = parseNpyImage(encodeNpy(a, [2, 4, 3]));
  t.same([first.width, first.height], [4, 2]);
  // Same header, other pixels: the remembered shape, this payload's bytes.
  const b = Uint8Array.from({ length: 24 }, (_, i) => 100 + i);
  const again = parseNpyImage(encodeNpy(b, [2, 4, 3]));
  t.same([again.width, again.height, again.channels], [4, 2, 3]);
  t.same([...again.data], [...b]);
  // Another shape right after: parsed, not taken from the remembered header.
  const other = parseNpyImage(encodeNpy(new Uint8Array(45), [3, 5, 3]));
  t.same([other.width, other.height, other.channels], [5, 3, 3]);
  // A remembered header with its data cut short: the parse's own error.
  parseNpyImage(encodeNpy(a, [2, 4, 3]));
  t.throws(() => parseNpyImage(encodeNpy(a, [2, 4, 3]).subarray(0, 140)), /truncated \.npy data: 12 of 24 bytes/);
  // Headers of the same length that differ in one field (the dtype) are not the remembered one.
  parseNpyImage(encodeNpy(a, [2, 4, 3]));
  const f32 = encodeNpy(new Uint8Array(96), [2, 4, 3], '<f4');
  t.equal(f32.length - 96, encodeNpy(a, [2, 4, 3]).length - 24, 'the two headers have the same length');
  t.throws(() => parseNpyImage(f32), /\.npy dtype <f4 is not uint8/);
  // A payload shorter than the remembered header.
  parseNpyImage(encodeNpy(a, [2, 4, 3]));
  t.throws(() => parseNpyImage(encodeNpy(a, [2, 4, 3]).subarray(0, 20)), /truncated \.npy header/);
});
