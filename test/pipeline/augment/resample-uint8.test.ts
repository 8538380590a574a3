// uint8 targets (uint8 frames): the WebAssembly kernel against the TypeScript one byte for byte,
// the fixed-point arithmetic by hand, and the distance to the float32 (normalised) output.
import t from 'tap';
import { centerCrop } from '../../../src/pipeline/augment/center-crop.ts';
import type { CropBox } from '../../../src/pipeline/augment/crop-box.ts';
import { normalisation } from '../../../src/pipeline/augment/normalisation.ts';
import { randomResizedCrop } from '../../../src/pipeline/augment/random-resized-crop.ts';
import { quantise, Resampler } from '../../../src/pipeline/augment/resample.ts';
import { AxisTable } from '../../../src/pipeline/image/axis-table.ts';
import { uint8StepBound } from '../../helpers/uint8-bound.ts';
import { PRETRAIN_AUGMENT } from '../../../src/pipeline/augment/settings.ts';
import { WasmResampler } from '../../../src/pipeline/augment/wasm/resample-wasm.ts';
import { Rng } from '../../../src/shared/random.ts';
import { RESAMPLE_CASES } from './resample-cases.ts';

const box = (x: number, y: number, width: number, height: number, flip = false): CropBox => ({ x, y, width, height, flip });

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

t.test('hand-computed: identity, flip, exact ties rounded half up', async (t) => {
  // 1:1 copy, then mirrored rows; planar output.
  let [a, b] = both(2, 1, Uint8Array.from([0, 100, 200, 40]), 2, 2, box(0, 0, 2, 2));
  t.same([...a], [0, 100, 200, 40]);
  t.same([...b], [...a]);
  [a, b] = both(2, 1, Uint8Array.from([0, 100, 200, 40]), 2, 2, box(0, 0, 2, 2, true));
  t.same([...a], [100, 0, 40, 200]);
  t.same([...b], [...a]);
  // 4x2 -> 2x2: vertical is 1:1 (two rows), horizontal averages pairs. Row [1, 2, 3, 4]:
  // 1.5 -> 2, 3.5 -> 4; row [2, 3, 5, 6]: 2.5 -> 3, 5.5 -> 6.
  [a, b] = both(2, 1, Uint8Array.from([1, 2, 3, 4, 2, 3, 5, 6]), 4, 2, box(0, 0, 4, 2));
  t.same([...a], [2, 4, 3, 6]);
  t.same([...b], [...a]);
  // Bilinear 2 -> 4 on [0, 10]: 0, 2.5 -> 3, 7.5 -> 8, 10. The 2.5 by hand: weights 0.75, 0.25
  // are 12288, 4096 in Q14; acc = 10 * 4096 = 40960; t = (40960 + 8256) >> 7 = 384 (2.5 in Q7
  // plus the half pixel 64); the vertical pass's weights are 16384, 0: 384 * 16384 >> 21 = 3.
  [a, b] = both(4, 1, Uint8Array.from([0, 10, 0, 10]), 2, 2, box(0, 0, 2, 2));
  t.same([...a.subarray(0, 4)], [0, 3, 8, 10]);
  t.same([...b], [...a]);
  // Three taps of 1/3 (6 -> 2 columns, one row): Q14 weights 5461, 5462, 5461. (0 + 0 + 255) / 3:
  // acc = 255 * 5461 = 1392555, t = 1400811 >> 7 = 10943, out = 10943 >> 7 = 85. (1 + 0 + 0) / 3:
  // t = (5461 + 8256) >> 7 = 107, out = 0. The single source row is weighted 16384 for both rows.
  [a, b] = both(2, 1, Uint8Array.from([0, 0, 255, 1, 0, 0]), 6, 1, box(0, 0, 6, 1));
  t.same([...a], [85, 0, 85, 0]);
  t.same([...b], [...a]);
  // RGB planes: 1 pixel (10, 20, 30) upscaled to 2x2.
  [a, b] = both(2, 3, Uint8Array.from([10, 20, 30]), 1, 1, box(0, 0, 1, 1));
  t.same([...a], [10, 10, 10, 10, 20, 20, 20, 20, 30, 30, 30, 30]);
  t.same([...b], [...a]);
});

t.test('quantise: Q14 weights by cumulative rounding, summing to exactly 16384', async (t) => {
  const q = new Int32Array(4).fill(-1);
  const third = Math.fround(1 / 3);
  quantise(Float32Array.from([third, third, third]), 0, 3, q, 0, 4);
  // 1/3 * 16384 = 5461.33 -> 5461; 2/3 -> 10922.67 -> 10923 (5462); the last takes the rest.
  t.same([...q], [5461, 5462, 5461, 0]);
  quantise(Float32Array.from([9, 0.25, 0.75]), 1, 2, q, 1, 3);
  t.same([...q], [5461, 4096, 12288, 0], 'offsets honoured, zero padding to the stride');
  quantise(Float32Array.from([1, 0]), 0, 2, q, 0, 2);
  t.same([...q.subarray(0, 2)], [16384, 0]);
  quantise(new Float32Array(2), 0, 0, q, 0, 2);
  t.same([...q.subarray(0, 2)], [0, 0], 'no taps: all zero (the output is 0)');
  // Float32 weights summing to 1 within their rounding: still exactly 16384.
  const rng = new Rng(5);
  for (let i = 0; i < 200; i++) {
    const n = 2 + (i % 9);
    const raw = Array.from({ length: n }, () => rng.next());
    const sum = raw.reduce((x, y) => x + y, 0);
    const w = Float32Array.from(raw, (v) => v / sum);
    const out = new Int32Array(n);
    quantise(w, 0, n, out, 0, n);
    t.equal(
      out.reduce((x, y) => x + y, 0),
      16384,
    );
    for (let k = 0; k < n; k++) if (out[k]! < 0 || Math.abs(out[k]! - w[k]! * 16384) > 1) t.fail(`weight ${k} of ${[...w]}: ${out[k]}`);
  }
});

// Float32 images of uint8 inputs: pixel v's normalised value is (v - mean) / std. The uint8 path
// rounds the resampled value before normalising, the float32 path does not: half a step, plus the
// fixed point's error (quantisedBound).

const MEAN = [123.675, 116.28, 103.53, 90];
const STD = [58.395, 57.12, 57.375, 50];

/** The bound of helpers/uint8-bound.ts for this crop's largest tap counts. */
function quantisedBound(res: number, w: number, h: number, b: CropBox): number {
  const taps = (t: AxisTable): number => Math.max(...t.count);
  return uint8StepBound(taps(new AxisTable(res).fill(w, b.x, b.width)), taps(new AxisTable(res).fill(h, b.y, b.height)), 1e-4);
}

for (const k of RESAMPLE_CASES) {
  t.test(`kernel == TypeScript byte for byte, within the fixed-point bound of float32: ${k.w}x${k.h}x${k.c} -> ${k.res}`, async (t) => {
    const wa = new WasmResampler(k.res, k.c);
    const ts = new Resampler(k.res, k.c);
    const mean = MEAN.slice(0, k.c);
    const std = STD.slice(0, k.c);
    const norm = normalisation(mean, std);
    const rng = new Rng(77, k.w, k.h, k.c, k.res);
    let mismatched = 0;
    let worstExcess = -1;
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
      // Its slack (1e-4) is the float32 error of normalising (a few ulps of 255).
      const bound = quantisedBound(k.res, k.w, k.h, b);
      for (let j = 0; j < n; j++) {
        const c = Math.floor(j / (k.res * k.res));
        // Distance in pixel steps between the uint8 value and the unrounded float32 resample.
        const exact = f32[j]! * std[c]! + mean[c]!;
        const steps = Math.abs(s[j]! - exact);
        if (steps - bound > worstExcess) worstExcess = steps - bound;
        if (steps > worstSteps) worstSteps = steps;
      }
    }
    t.equal(mismatched, 0, `${k.n} crops: the kernel and Resampler give the same bytes`);
    t.ok(
      worstExcess <= 0,
      `uint8 within ${worstSteps.toFixed(6)} pixel steps of float32, inside each crop's bound (worst margin ${(-worstExcess).toFixed(6)})`,
    );
  });
}

t.test('table cache: hits, evictions, flips and mixed image sizes give the bytes of a fresh build', async (t) => {
  const rng = new Rng(91);
  const sizes: [number, number][] = [
    [64, 48],
    [48, 64],
    [32, 32],
    [64, 64],
  ];
  // A small pool of boxes per size, so that most calls repeat a key; flips drawn independently.
  const pool = sizes.map(([w, h]) => Array.from({ length: 12 }, (_, i) => randomResizedCrop(4, 0, i, w, h, PRETRAIN_AUGMENT)));
  // Boxes meeting the 32x32 image's right or bottom edge (its tables clamp there, a larger
  // image's do not).
  pool[2]!.splice(0, 3, box(16, 20, 16, 12), box(20, 0, 12, 32), box(0, 0, 32, 32));
  // Default cache; a 40 KiB one (3 vertical and 10 horizontal two-way sets: constant evictions);
  // none.
  const kernels = [new WasmResampler(64, 3), new WasmResampler(64, 3, { tableCacheBytes: 40 << 10 }), new WasmResampler(64, 3, { tableCacheBytes: 0 })];
  const ts = new Resampler(64, 3);
  const norm = normalisation(MEAN.slice(0, 3), STD.slice(0, 3));
  const f32 = new Float32Array(3 * 64 * 64);
  const f32ts = new Float32Array(3 * 64 * 64);
  let mismatched = 0;
  let floatMismatched = 0;
  const calls = 600;
  for (let i = 0; i < calls; i++) {
    const s = rng.below(sizes.length);
    const [w, h] = sizes[s]!;
    // Half the time a 32x32 box, valid on every size: the same (x, width) on images of other
    // sizes, whose tables differ where the box meets the smaller image's edge.
    const b = { ...pool[rng.below(2) ? s : 2]![rng.below(12)]!, flip: rng.below(2) === 1 };
    const src = Uint8Array.from({ length: w * h * 3 }, () => rng.nextUint32() & 255);
    for (const k of kernels) {
      const [a, got] = both(64, 3, src, w, h, b, k, ts);
      if (Buffer.compare(Buffer.from(a), Buffer.from(got)) !== 0) mismatched++;
      // A float32 call on the same instance between uint8 ones (its kernel keeps no tables).
      if (i % 5 === 0) {
        k.run(src, w, h, b, f32, 0, norm);
        ts.run(src, w, h, b, f32ts, 0, norm);
        if (Buffer.compare(Buffer.from(f32.buffer), Buffer.from(f32ts.buffer)) !== 0) floatMismatched++;
      }
    }
  }
  t.equal(mismatched, 0, `${calls} crops x 3 cache sizes: the same bytes as the TypeScript reference`);
  t.equal(floatMismatched, 0, 'float32 calls in between: the same bits');
  t.throws(() => new WasmResampler(64, 3, { tableCacheBytes: -1 }), RangeError);
  t.throws(() => new WasmResampler(64, 3, { tableCacheBytes: 1.5 }), RangeError);
});

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
