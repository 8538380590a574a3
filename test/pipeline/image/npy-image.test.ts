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
