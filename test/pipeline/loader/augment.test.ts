import t from 'tap';
import { Augmenter, normalisation } from '../../../src/pipeline/loader/augment.ts';
import { parseNpyImage } from '../../../src/pipeline/image/npy-image.ts';
import { encodeNpy } from '../../../src/pipeline/webdataset/codecs.ts';

const identity1 = normalisation([0], [1]);
const box = (x: number, y: number, width: number, height: number, flip = false) => ({ x, y, width, height, flip });

function run(
  src: number[],
  w: number,
  h: number,
  c: number,
  res: number,
  b: ReturnType<typeof box>,
  norm = c === 1 ? identity1 : normalisation([0, 0, 0], [1, 1, 1]),
): number[] {
  const out = new Float32Array(c * res * res + 2).fill(-999);
  new Augmenter(res, c).run(Uint8Array.from(src), w, h, b, norm, out, 1);
  t.equal(out[0], -999, 'nothing written before the offset');
  t.equal(out[out.length - 1], -999, 'nothing written after the sample');
  return [...out.subarray(1, 1 + c * res * res)].map((v) => Math.round(v * 1000) / 1000);
}

t.test('identity, flip and crop offsets', async (t) => {
  t.same(run([0, 100, 200, 40], 2, 2, 1, 2, box(0, 0, 2, 2)), [0, 100, 200, 40]);
  t.same(run([0, 100, 200, 40], 2, 2, 1, 2, box(0, 0, 2, 2, true)), [100, 0, 40, 200], 'rows mirrored');
  t.same(run([0, 10, 20, 30], 4, 1, 1, 1, box(2, 0, 1, 1)), [20], 'crop picks pixel x=2');
});

t.test('area downscale: 2x2 blocks averaged; fractional 3 -> 2 weights (hand-computed)', async (t) => {
  // 4x4 -> 2x2: each output is the mean of a 2x2 block.
  const img = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60];
  t.same(run(img, 4, 4, 1, 2, box(0, 0, 4, 4)), [10, 18, 42, 50]);
  // 3x3 -> 2x2 on a horizontal ramp [0, 30, 60]: out0 = (0*1 + 30*0.5) / 1.5 = 10,
  // out1 = (30*0.5 + 60*1) / 1.5 = 50; rows are equal so the vertical pass keeps them.
  t.same(run([0, 30, 60, 0, 30, 60, 0, 30, 60], 3, 3, 1, 2, box(0, 0, 3, 3)), [10, 50, 10, 50]);
});

t.test('bilinear upscale 2 -> 4 as PIL computes it (hand-computed)', async (t) => {
  // Output centres at 0.25, 0.75, 1.25, 1.75 in source pixels; pixel centres at 0.5 and 1.5:
  // 0.25 -> edge (0), 0.75 -> 0.75*0 + 0.25*100 = 25, 1.25 -> 75, 1.75 -> edge (100).
  const out = run([0, 100, 0, 100], 2, 2, 1, 4, box(0, 0, 2, 2));
  t.same(out.slice(0, 4), [0, 25, 75, 100]);
  t.same(out.slice(12, 16), [0, 25, 75, 100], 'rows identical since the columns are');
});

t.test('RGB comes out planar C,H,W and normalised per channel', async (t) => {
  // A 1x1 RGB pixel (10, 20, 30) upscaled to 2x2; mean (10, 10, 10), std (1, 2, 4).
  const out = run([10, 20, 30], 1, 1, 3, 2, box(0, 0, 1, 1), normalisation([10, 10, 10], [1, 2, 4]));
  t.same(out, [0, 0, 0, 0, 5, 5, 5, 5, 5, 5, 5, 5]);
  // 2x1 RGB, flipped: planes keep their channel, pixels swap.
  t.same(run([1, 2, 3, 4, 5, 6], 2, 1, 3, 1, box(0, 0, 1, 1, true)), [1, 2, 3]);
  t.same(run([1, 2, 3, 4, 5, 6], 2, 1, 3, 1, box(1, 0, 1, 1)), [4, 5, 6]);
});

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
