import t from 'tap';
import { fitImage, resize, targetSize } from '../../../src/pipeline/image/resize.ts';
import type { RawImage } from '../../../src/pipeline/image/types.ts';
import { randomImage, rng } from './fixtures/images.ts';

function grey(width: number, height: number, values: number[]): RawImage {
  return { data: Uint8Array.from(values), width, height, channels: 1 };
}

const list = (img: RawImage): number[] => Array.from(img.data);

t.test('area downscale, integer ratio: 4x1 [0,10,20,30] -> 2x1 is the pairwise mean', async (t) => {
  const out = resize(grey(4, 1, [0, 10, 20, 30]), 2, 1);
  t.same(list(out), [5, 25]);
  t.equal(out.width, 2);
  t.equal(out.height, 1);
  t.equal(out.channels, 1);
});

t.test('area downscale, fractional weights: 3 -> 2', async (t) => {
  // Each output covers 1.5 source pixels: out0 = [0, 1.5), out1 = [1.5, 3).
  //   [0, 30, 90]:  out0 = (0*1 + 30*0.5) / 1.5 = 10;   out1 = (30*0.5 + 90*1) / 1.5 = 70
  //   [10, 40, 100]: out0 = (10 + 20) / 1.5 = 20;        out1 = (20 + 100) / 1.5 = 80
  t.same(list(resize(grey(3, 1, [0, 30, 90]), 2, 1)), [10, 70]);
  t.same(list(resize(grey(3, 1, [10, 40, 100]), 2, 1)), [20, 80]);
  // Same along the vertical axis.
  t.same(list(resize(grey(1, 3, [0, 30, 90]), 1, 2)), [10, 70]);
  // 5 -> 2: out0 = [0, 2.5) = (p0 + p1 + 0.5*p2) / 2.5; [0,10,20,30,40] -> (0+10+10)/2.5 = 8,
  // out1 = (0.5*20 + 30 + 40) / 2.5 = 32.
  t.same(list(resize(grey(5, 1, [0, 10, 20, 30, 40]), 2, 1)), [8, 32]);
});

t.test('area downscale of a 2-D block averages both axes', async (t) => {
  // 4x4 -> 2x2, each output the mean of a 2x2 block.
  const src = grey(4, 4, [0, 4, 100, 100, 8, 12, 100, 104, 50, 50, 1, 3, 50, 54, 5, 7]);
  t.same(list(resize(src, 2, 2)), [6, 101, 51, 4]);
  // 4x4 -> 1x1 is the global mean: 648 / 16 = 40.5, and halves round up (as PIL does) -> 41.
  t.same(list(resize(src, 1, 1)), [41]);
  t.same(list(resize(grey(2, 1, [0, 1]), 1, 1)), [1], '0.5 rounds up');
  t.same(list(resize(grey(2, 1, [254, 255]), 1, 1)), [255], '254.5 rounds up');
});

t.test('bilinear upscale 2x2 -> 4x4 matches PIL BILINEAR worked by hand', async (t) => {
  // Per axis 2 -> 4 (scale 0.5, centres 0.25, 0.75, 1.25, 1.75 in source coordinates, source
  // centres at 0.5 and 1.5, taps outside the image dropped and renormalised):
  //   out0 = p0, out1 = 0.75 p0 + 0.25 p1, out2 = 0.25 p0 + 0.75 p1, out3 = p1.
  // Rows of [[0, 100], [200, 40]] horizontally: r0 = [0, 25, 75, 100], r1 = [200, 160, 80, 40].
  // Vertically: row1 = 0.75 r0 + 0.25 r1 = [50, 58.75, 76.25, 85] -> [50, 59, 76, 85];
  // row2 = 0.25 r0 + 0.75 r1 = [150, 126.25, 78.75, 55] -> [150, 126, 79, 55].
  const out = resize(grey(2, 2, [0, 100, 200, 40]), 4, 4);
  t.same(list(out), [0, 25, 75, 100, 50, 59, 76, 85, 150, 126, 79, 55, 200, 160, 80, 40]);
});

t.test('bilinear upscale 2 -> 3 uses PIL centres', async (t) => {
  // scale 2/3: centres 1/3, 1, 5/3. out0: only p0 in range -> p0. out1: centre 1 lies between
  // centres 0.5 and 1.5 -> (p0 + p1) / 2. out2 -> p1 (p2 does not exist, renormalised).
  t.same(list(resize(grey(2, 1, [10, 90]), 3, 1)), [10, 50, 90]);
});

t.test('one-pixel axes', async (t) => {
  t.same(list(resize(grey(1, 1, [77]), 3, 2)), [77, 77, 77, 77, 77, 77], '1x1 -> 3x2');
  // 1x2 column [0, 100] -> 2x4: horizontal replicate, vertical 2 -> 4 bilinear.
  t.same(list(resize(grey(1, 2, [0, 100]), 2, 4)), [0, 0, 25, 25, 75, 75, 100, 100]);
  t.same(list(resize(grey(5, 1, [0, 10, 20, 30, 40]), 1, 1)), [20], '5x1 -> 1x1 mean');
});

t.test('RGB channels are resampled independently', async (t) => {
  const src: RawImage = { data: Uint8Array.from([10, 20, 30, 50, 60, 70]), width: 2, height: 1, channels: 3 };
  t.same(list(resize(src, 1, 1)), [30, 40, 50]);
  // A 4x1 RGB row whose channels are different ramps: R up, G down, B constant.
  const ramp: RawImage = {
    data: Uint8Array.from([0, 200, 7, 10, 150, 7, 20, 100, 7, 30, 50, 7]),
    width: 4,
    height: 1,
    channels: 3,
  };
  t.same(list(resize(ramp, 2, 1)), [5, 175, 7, 25, 75, 7]);
  const up = resize({ data: Uint8Array.from([0, 255, 40, 100, 55, 40]), width: 2, height: 1, channels: 3 }, 4, 1);
  t.same(list(up), [0, 255, 40, 25, 205, 40, 75, 105, 40, 100, 55, 40]);
});

t.test('crop rectangles, fractional origin included', async (t) => {
  const row = grey(5, 1, [0, 10, 20, 30, 40]);
  // x = 0.5, width 2 onto 2 pixels: out0 = [0.5, 1.5) = 0.5*0 + 0.5*10 = 5; out1 = [1.5, 2.5) = 15.
  t.same(list(resize(row, 2, 1, { x: 0.5, y: 0, width: 2, height: 1 })), [5, 15]);
  // x = 1.5, width 3 onto 1 pixel: (0.5*10 + 20 + 30 + 0.5*40) / 3 = 75 / 3 = 25.
  t.same(list(resize(row, 1, 1, { x: 1.5, y: 0, width: 3, height: 1 })), [25]);
  // Integer crop: the middle three pixels unchanged.
  t.same(list(resize(row, 3, 1, { x: 1, y: 0, width: 3, height: 1 })), [10, 20, 30]);
  // A vertical crop of a 2-column image reads only its own rows.
  const col = grey(2, 4, [0, 1, 100, 101, 200, 201, 50, 51]);
  t.same(list(resize(col, 2, 1, { x: 0, y: 1, width: 2, height: 2 })), [150, 151]);
  // Cropped upscale: crop [1, 3) of the 5-row onto 4 pixels; centres 1.25, 1.75, 2.25, 2.75 ->
  // between pixel centres 0.5/1.5/2.5/3.5: 0.25*0 + 0.75*10 = 7.5 -> 8, 12.5 -> 13, 17.5 -> 18,
  // 22.5 -> 23 (neighbours outside the crop but inside the image take part, as in PIL).
  t.same(list(resize(row, 4, 1, { x: 1, y: 0, width: 2, height: 1 })), [8, 13, 18, 23]);
});

t.test('one axis may shrink while the other enlarges', async (t) => {
  // 4x2 -> 2x4: horizontal pairs averaged, vertical 2 -> 4 bilinear.
  const src = grey(4, 2, [0, 20, 40, 60, 100, 120, 140, 160]);
  // Horizontal: [10, 50] and [110, 150]; vertical 2 -> 4 weights (1), (.75,.25), (.25,.75), (1).
  t.same(list(resize(src, 2, 4)), [10, 50, 35, 75, 85, 125, 110, 150]);
});

t.test('identity when sizes match, and output buffers', async (t) => {
  const src = randomImage(7, 5, 3, 3);
  const same = resize(src, 7, 5);
  t.same(list(same), list(src));
  t.not(same.data, src.data, 'a fresh buffer, never the source');
  const out = new Uint8Array(7 * 5 * 3 + 11);
  const into = resize(src, 7, 5, undefined, out);
  t.equal(into.data.buffer, out.buffer, 'writes into the given buffer');
  t.equal(into.data.length, 7 * 5 * 3);
  t.same(list(into), list(src));
  t.throws(() => resize(src, 7, 5, undefined, new Uint8Array(10)), RangeError);
});

t.test('constant images stay constant under any geometry', async (t) => {
  const next = rng(11);
  for (let n = 0; n < 200; n++) {
    const w = 1 + Math.floor(next() * 40);
    const h = 1 + Math.floor(next() * 40);
    const v = Math.floor(next() * 256);
    const src: RawImage = { data: new Uint8Array(w * h * 3).fill(v), width: w, height: h, channels: 3 };
    const cw = Math.max(0.01, next() * w);
    const ch = Math.max(0.01, next() * h);
    const crop = { x: next() * (w - cw), y: next() * (h - ch), width: cw, height: ch };
    const ow = 1 + Math.floor(next() * 64);
    const oh = 1 + Math.floor(next() * 64);
    const out = resize(src, ow, oh, crop);
    if (!out.data.every((x) => x === v)) {
      t.fail(`constant ${v} changed: ${w}x${h} crop ${JSON.stringify(crop)} -> ${ow}x${oh}`);
      return;
    }
  }
  t.pass('200 random geometries');
});

t.test('repeated calls (weight-table cache) give identical results', async (t) => {
  const src = randomImage(50, 37, 3, 5);
  const first = list(resize(src, 13, 9));
  // Push well over the cache capacity through, then ask again.
  for (let n = 1; n <= 100; n++) resize(src, (n % 50) + 1, 9);
  t.same(list(resize(src, 13, 9)), first);
});

t.test('bad geometry is refused', async (t) => {
  const src = randomImage(10, 10, 1);
  t.throws(() => resize(src, 0, 5), RangeError);
  t.throws(() => resize(src, 5, 2.5), RangeError);
  t.throws(() => resize(src, 5, 5, { x: -1, y: 0, width: 5, height: 5 }), RangeError);
  t.throws(() => resize(src, 5, 5, { x: 6, y: 0, width: 5, height: 5 }), RangeError);
  t.throws(() => resize(src, 5, 5, { x: 0, y: 0, width: 0, height: 5 }), RangeError);
  t.throws(() => resize(src, 5, 5, { x: 0, y: 0, width: 5, height: Number.NaN }), RangeError);
  t.doesNotThrow(() => resize(src, 5, 5, { x: 0.5, y: 0.5, width: 9.5, height: 9.5 }));
});

t.test('targetSize', async (t) => {
  t.same(targetSize(500, 375, 64, 'max-side'), { width: 64, height: 48 });
  t.same(targetSize(375, 500, 64, 'max-side'), { width: 48, height: 64 });
  t.same(targetSize(28, 28, 64, 'max-side'), { width: 28, height: 28 }, 'never upscaled');
  t.same(targetSize(64, 64, 64, 'max-side'), { width: 64, height: 64 });
  t.same(targetSize(64, 10, 64, 'max-side'), { width: 64, height: 10 });
  t.same(targetSize(1, 1000, 64, 'max-side'), { width: 1, height: 64 }, 'short side at least 1');
  t.same(targetSize(1000, 1, 64, 'max-side'), { width: 64, height: 1 });
  t.same(targetSize(333, 500, 64, 'max-side'), { width: 43, height: 64 }, '42.62 rounds to 43');
  t.same(targetSize(500, 375, 64, 'center-crop'), {
    width: 64,
    height: 64,
    crop: { x: 62.5, y: 0, width: 375, height: 375 },
  });
  t.same(targetSize(375, 500, 64, 'center-crop'), {
    width: 64,
    height: 64,
    crop: { x: 0, y: 62.5, width: 375, height: 375 },
  });
  t.same(targetSize(32, 48, 64, 'center-crop'), { width: 64, height: 64, crop: { x: 0, y: 8, width: 32, height: 32 } }, 'upscales');
  t.same(targetSize(100, 100, 64, 'center-crop'), { width: 64, height: 64 });
  t.same(targetSize(64, 64, 64, 'center-crop'), { width: 64, height: 64 });
  t.throws(() => targetSize(0, 10, 64, 'max-side'), RangeError);
});

t.test('fitImage', async (t) => {
  const small = randomImage(28, 28, 3);
  t.equal(fitImage(small, 64, 'max-side'), small, 'unchanged image returned as is');
  t.equal(fitImage(randomImage(64, 64, 1), 64, 'center-crop').width, 64);
  const big = randomImage(500, 375, 3);
  const stored = fitImage(big, 64, 'max-side');
  t.same([stored.width, stored.height, stored.channels, stored.data.length], [64, 48, 3, 64 * 48 * 3]);
  const centred = fitImage(big, 64, 'center-crop');
  t.same([centred.width, centred.height, centred.data.length], [64, 64, 64 * 64 * 3]);
  // The centre crop of a left/right-symmetric image is symmetric too.
  const sym = randomImage(100, 60, 1, 9);
  for (let y = 0; y < 60; y++) for (let x = 0; x < 50; x++) sym.data[y * 100 + 99 - x] = sym.data[y * 100 + x];
  const c = fitImage(sym, 16, 'center-crop');
  let mirrored = true;
  for (let y = 0; y < 16; y++) for (let x = 0; x < 8; x++) if (c.data[y * 16 + x] !== c.data[y * 16 + 15 - x]) mirrored = false;
  t.ok(mirrored, 'centre crop is centred');
});
