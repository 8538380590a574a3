// uint8 targets (uint8 frames): the WebAssembly kernel against the TypeScript one byte for byte,
// the rounding rule, and the distance to the float32 (normalised) output.
import t from 'tap';
import { centerCrop } from '../../../src/pipeline/augment/center-crop.ts';
import type { CropBox } from '../../../src/pipeline/augment/crop-box.ts';
import { normalisation } from '../../../src/pipeline/augment/normalisation.ts';
import { randomResizedCrop } from '../../../src/pipeline/augment/random-resized-crop.ts';
import { Resampler } from '../../../src/pipeline/augment/resample.ts';
import { PRETRAIN_AUGMENT } from '../../../src/pipeline/augment/settings.ts';
import { WasmResampler } from '../../../src/pipeline/augment/wasm/resample-wasm.ts';
import { Rng } from '../../../src/shared/random.ts';
import { RESAMPLE_CASES } from './resample-cases.ts';

const box = (x: number, y: number, width: number, height: number, flip = false): CropBox => ({ x, y, width, height, flip });

t.test('a Uint8ClampedArray store rounds as the kernel: to nearest, ties to even, clamped', async (t) => {
  const cases: [number, number][] = [
    [0, 0],
    [0.5, 0],
    [1.5, 2],
    [2.5, 2],
    [3.5, 4],
    [254.5, 254],
    [253.5, 254],
    [0.49999997, 0],
    [1.4999999, 1],
    [1.5000001, 2],
    [254.99, 255],
    [255.4, 255],
    [300, 255],
    [-0.2, 0],
    [-7, 0],
    [NaN, 0],
    [Infinity, 255],
  ];
  const cell = new Uint8ClampedArray(1);
  for (const [v, want] of cases) {
    cell[0] = v;
    t.equal(cell[0], want, `${v} -> ${want}`);
  }
});

/** Both kernels into one padded buffer each; checks nothing lands outside the slot. */
function both(
  res: number,
  c: number,
  src: Uint8Array,
  w: number,
  h: number,
  b: CropBox,
  wa = new WasmResampler(res, c),
  ts = new Resampler(res, c),
): [Uint8ClampedArray, Uint8ClampedArray] {
  const n = c * res * res;
  const a = new Uint8ClampedArray(n + 6).fill(0xee);
  const s = new Uint8ClampedArray(new SharedArrayBuffer(n + 6)).fill(0xee);
  ts.run(src, w, h, b, a, 3);
  wa.run(src, w, h, b, s, 3);
  for (const out of [a, s]) {
    if (out[2] !== 0xee || out[n + 3] !== 0xee) throw new Error('wrote outside its slot');
  }
  return [a.subarray(3, 3 + n), s.subarray(3, 3 + n)];
}

t.test('hand-computed: identity, flip, exact ties rounded to even', async (t) => {
  // 1:1 copy, then mirrored rows; planar output.
  let [a, b] = both(2, 1, Uint8Array.from([0, 100, 200, 40]), 2, 2, box(0, 0, 2, 2));
  t.same([...a], [0, 100, 200, 40]);
  t.same([...b], [...a]);
  [a, b] = both(2, 1, Uint8Array.from([0, 100, 200, 40]), 2, 2, box(0, 0, 2, 2, true));
  t.same([...a], [100, 0, 40, 200]);
  t.same([...b], [...a]);
  // 4x2 -> 2x2: vertical is 1:1 (two rows), horizontal averages pairs. Row [1, 2, 3, 4]:
  // 1.5 -> 2, 3.5 -> 4; row [2, 3, 5, 6]: 2.5 -> 2 (even), 5.5 -> 6.
  [a, b] = both(2, 1, Uint8Array.from([1, 2, 3, 4, 2, 3, 5, 6]), 4, 2, box(0, 0, 4, 2));
  t.same([...a], [2, 4, 2, 6]);
  t.same([...b], [...a]);
  // Bilinear 2 -> 4 on [0, 10]: 0, 2.5 -> 2, 7.5 -> 8, 10.
  [a, b] = both(4, 1, Uint8Array.from([0, 10, 0, 10]), 2, 2, box(0, 0, 2, 2));
  t.same([...a.subarray(0, 4)], [0, 2, 8, 10]);
  t.same([...b], [...a]);
  // RGB planes: 1 pixel (10, 20, 30) upscaled to 2x2.
  [a, b] = both(2, 3, Uint8Array.from([10, 20, 30]), 1, 1, box(0, 0, 1, 1));
  t.same([...a], [10, 10, 10, 10, 20, 20, 20, 20, 30, 30, 30, 30]);
  t.same([...b], [...a]);
});

// Float32 images of uint8 inputs: pixel v's normalised value is (v - mean) / std. The uint8 path
// rounds the resampled value before normalising, the float32 path does not: at most half a step.
const MEAN = [123.675, 116.28, 103.53, 90];
const STD = [58.395, 57.12, 57.375, 50];

for (const k of RESAMPLE_CASES) {
  t.test(`kernel == TypeScript byte for byte, within 0.5/std of float32: ${k.w}x${k.h}x${k.c} -> ${k.res}`, async (t) => {
    const wa = new WasmResampler(k.res, k.c);
    const ts = new Resampler(k.res, k.c);
    const mean = MEAN.slice(0, k.c);
    const std = STD.slice(0, k.c);
    const norm = normalisation(mean, std);
    const rng = new Rng(77, k.w, k.h, k.c, k.res);
    let mismatched = 0;
    let worstSteps = 0;
    const n = k.c * k.res * k.res;
    const f32 = new Float32Array(n);
    for (let i = 0; i < k.n; i++) {
      const src = new Uint8Array(k.w * k.h * k.c);
      // Half the images smooth (many exact ties: .5 averages of neighbours), half noise.
      if (i % 2) for (let j = 0; j < src.length; j++) src[j] = rng.nextUint32() & 255;
      else for (let j = 0; j < src.length; j++) src[j] = (j >> 2) & 255;
      let b: CropBox;
      if (i % 4 === 3) b = { ...centerCrop(k.w, k.h, [1, 0.875, 0.5, 0.3][(i >> 2) % 4]!), flip: (i & 8) !== 0 };
      else b = randomResizedCrop(11, 2, i, k.w, k.h, PRETRAIN_AUGMENT);
      const [a, s] = both(k.res, k.c, src, k.w, k.h, b, wa, ts);
      if (Buffer.compare(Buffer.from(a), Buffer.from(s)) !== 0) mismatched++;
      wa.run(src, k.w, k.h, b, f32, 0, norm);
      for (let j = 0; j < n; j++) {
        const c = Math.floor(j / (k.res * k.res));
        // Distance in pixel steps between the rounded value and the unrounded resample.
        const steps = Math.abs((s[j]! - mean[c]!) / std[c]! - f32[j]!) * std[c]!;
        if (steps > worstSteps) worstSteps = steps;
      }
    }
    t.equal(mismatched, 0, `${k.n} crops: the kernel and Resampler give the same bytes`);
    // 0.5 steps from rounding plus the float32 error of normalising (a few ulps of 255).
    t.ok(worstSteps <= 0.5 + 1e-4, `uint8 within ${worstSteps.toFixed(6)} pixel steps of float32 (bound 0.5 + 1e-4)`);
  });
}

t.test('no resampling: uint8 is the stored pixels exactly, in C,H,W', async (t) => {
  const rng = new Rng(3);
  const w = 16;
  const src = Uint8Array.from({ length: w * w * 3 }, () => rng.nextUint32() & 255);
  const [a, s] = both(w, 3, src, w, w, centerCrop(w, w));
  const want = new Uint8Array(3 * w * w);
  for (let c = 0; c < 3; c++) for (let i = 0; i < w * w; i++) want[c * w * w + i] = src[i * 3 + c]!;
  t.same([...a], [...want]);
  t.same([...s], [...want]);
});
