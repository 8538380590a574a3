// The WebAssembly kernel against the TypeScript one: the same bits for float32 targets (normalised
// values) on every shape, crop and flip, including boxes off the image and memory growth.
import t from 'tap';
import { centerCrop } from '../../../src/pipeline/augment/center-crop.ts';
import { createResampler } from '../../../src/pipeline/augment/create-resampler.ts';
import type { CropBox } from '../../../src/pipeline/augment/crop-box.ts';
import { normalisation, type Normalisation } from '../../../src/pipeline/augment/normalisation.ts';
import { randomResizedCrop } from '../../../src/pipeline/augment/random-resized-crop.ts';
import { Resampler } from '../../../src/pipeline/augment/resample.ts';
import { PRETRAIN_AUGMENT } from '../../../src/pipeline/augment/settings.ts';
import { WasmResampler, wasmResampleModule } from '../../../src/pipeline/augment/wasm/resample-wasm.ts';
import { Rng } from '../../../src/shared/random.ts';
import { RESAMPLE_CASES } from './resample-cases.ts';

const IMAGENET = normalisation([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]);
const GRAY = normalisation([33.3], [78.6]);

// Node 20 always has WebAssembly SIMD; the module must compile where these tests run.
t.ok(wasmResampleModule(), 'resample.wasm compiles (WebAssembly SIMD available)');

function randomImage(rng: Rng, n: number): Uint8Array {
  const img = new Uint8Array(n);
  for (let i = 0; i < n; i++) img[i] = rng.nextUint32() & 255;
  return img;
}

/**
 * Runs both kernels into a padded buffer each (wasm's in a SharedArrayBuffer, as a ring slot);
 * returns how many values differ in any bit (Infinity if either wrote outside its slot).
 */
function differing(ts: Resampler, wa: WasmResampler, src: Uint8Array, w: number, h: number, box: CropBox, norm?: Normalisation): number {
  const n = ts.channels * ts.res * ts.res;
  const a = new Float32Array(n + 5).fill(-999);
  const b = new Float32Array(new SharedArrayBuffer((n + 5) * 4)).fill(-999);
  ts.run(src, w, h, box, a, 3, norm);
  wa.run(src, w, h, box, b, 3, norm);
  for (const out of [a, b]) if (out[2] !== -999 || out[n + 3] !== -999) return Infinity;
  const ab = new Uint32Array(a.buffer);
  const bb = new Uint32Array(b.buffer);
  let d = 0;
  for (let i = 0; i < ab.length; i++) if (ab[i] !== bb[i]) d++;
  return d;
}

for (const k of RESAMPLE_CASES) {
  t.test(`same bits as Resampler: ${k.w}x${k.h}x${k.c} -> ${k.res}`, async (t) => {
    const ts = new Resampler(k.res, k.c);
    const wa = new WasmResampler(k.res, k.c);
    const rng = new Rng(42, k.w, k.h, k.c, k.res);
    const norm = k.c === 3 ? IMAGENET : normalisation(Array(k.c).fill(33.3), Array(k.c).fill(78.6));
    let bad = 0;
    let flips = 0;
    for (let i = 0; i < k.n; i++) {
      const src = randomImage(rng, k.w * k.h * k.c);
      let box: CropBox;
      if (i % 4 === 3) box = { ...centerCrop(k.w, k.h, [1, 0.875, 0.5, 0.3][(i % 16) >> 2]!), flip: (i & 8) !== 0 };
      else box = randomResizedCrop(7, 1, i, k.w, k.h, PRETRAIN_AUGMENT);
      if (box.flip) flips++;
      bad += differing(ts, wa, src, k.w, k.h, box, norm);
    }
    // No normalisation: the raw 0..255 values.
    const src = randomImage(rng, k.w * k.h * k.c);
    const raw = differing(ts, wa, src, k.w, k.h, randomResizedCrop(8, 0, 0, k.w, k.h, PRETRAIN_AUGMENT));
    t.ok(flips > 0 && flips < k.n, 'both flip settings exercised');
    t.equal(bad, 0, `${k.n} normalised crops: no value differs`);
    t.equal(raw, 0, 'unnormalised: no value differs');
  });
}

t.test('whole image, every flip, every channel count 1..4, including 1-pixel axes', async (t) => {
  const rng = new Rng(5);
  let bad = 0;
  for (const [w, h] of [
    [1, 1],
    [1, 5],
    [6, 1],
    [2, 2],
    [3, 3],
    [5, 8],
  ] as const) {
    for (let c = 1; c <= 4; c++) {
      for (const res of [1, 2, 3, 4, 5, 7]) {
        const norm = normalisation(Array(c).fill(10), Array(c).fill(3));
        const src = randomImage(rng, w * h * c);
        for (const flip of [false, true]) {
          const d = differing(new Resampler(res, c), new WasmResampler(res, c), src, w, h, { x: 0, y: 0, width: w, height: h, flip }, norm);
          if (d) t.fail(`${w}x${h}x${c} -> ${res} flip=${flip}: ${d} values differ`);
          bad += d;
        }
      }
    }
  }
  t.equal(bad, 0, 'all sizes agree');
});

t.test('one resampler reused across sizes grows its memory and stays exact', async (t) => {
  const ts = new Resampler(64, 3);
  const wa = new WasmResampler(64, 3);
  const rng = new Rng(9);
  const sizes = [
    [64, 48],
    [500, 375],
    [64, 64],
    [1024, 768],
    [32, 32],
    [500, 375],
  ] as const;
  let bad = 0;
  for (const [w, h] of sizes) {
    const src = randomImage(rng, w * h * 3);
    for (let i = 0; i < 4; i++) bad += differing(ts, wa, src, w, h, randomResizedCrop(3, 2, i, w, h, PRETRAIN_AUGMENT), IMAGENET);
    bad += differing(ts, wa, src, w, h, centerCrop(w, h), IMAGENET);
  }
  t.equal(bad, 0);
});

t.test('source may be a view with extra bytes around it (Buffer slice of a shard)', async (t) => {
  const rng = new Rng(11);
  const backing = randomImage(rng, 64 * 48 * 3 + 100);
  const src = backing.subarray(37, 37 + 64 * 48 * 3);
  t.equal(differing(new Resampler(64, 3), new WasmResampler(64, 3), src, 64, 48, { x: 3.5, y: 40, width: 60, height: 8, flip: true }, IMAGENET), 0);
});

t.test('gray 28x28 with the default gray normalisation', async (t) => {
  const rng = new Rng(12);
  const src = randomImage(rng, 28 * 28);
  t.equal(differing(new Resampler(28, 1), new WasmResampler(28, 1), src, 28, 28, { x: 2, y: 5, width: 17, height: 20, flip: true }, GRAY), 0);
});

t.test('createResampler picks wasm where it can, TypeScript otherwise', async (t) => {
  t.type(createResampler(64, 3), WasmResampler);
  t.type(createResampler(28, 1), WasmResampler);
  t.type(createResampler(8, 5), Resampler, 'more channels than the kernel is built for');
  t.throws(() => new WasmResampler(16, 5), RangeError);
  t.throws(() => new WasmResampler(0, 3), RangeError);
});

t.test('crop boxes hanging off the image give what Resampler gives (edge clamping, empty area taps)', async (t) => {
  const rng = new Rng(13);
  const boxes: CropBox[] = [
    { x: -3, y: -2, width: 10, height: 9, flip: false },
    { x: 2, y: 1, width: 8, height: 8, flip: true },
    { x: 10, y: 0, width: 8, height: 4, flip: false },
    { x: 0, y: 6, width: 4, height: 5, flip: true },
    { x: 3.5, y: 3.5, width: 2, height: 2, flip: false },
    { x: -1.5, y: 2.25, width: 3, height: 3, flip: true },
  ];
  for (const c of [1, 3]) {
    const src = randomImage(rng, 6 * 5 * c);
    for (const res of [4, 8]) {
      for (const b of boxes) {
        const norm = normalisation(Array(c).fill(10), Array(c).fill(3));
        t.equal(differing(new Resampler(res, c), new WasmResampler(res, c), src, 6, 5, b, norm), 0, `${JSON.stringify(b)} c=${c} res=${res}`);
      }
    }
  }
});
