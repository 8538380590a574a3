import t from 'tap';
import { Augmenter, normalisation, type Normalisation } from '../../../src/pipeline/loader/augment.ts';
import { DEFAULT_AUGMENT, centerCrop, randomResizedCrop, type CropBox } from '../../../src/pipeline/loader/augment-params.ts';
import { Rng } from '../../../src/shared/random.ts';
import { WasmAugmenter, createAugmenter, wasmAugmentModule } from '../../../src/pipeline/loader/wasm/augment-wasm.ts';

const TOL = 1e-4;
const IMAGENET = normalisation([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]);
const GRAY = normalisation([33.3], [78.6]);

// Node 20 always has WebAssembly SIMD; the module must compile where these tests run.
t.ok(wasmAugmentModule(), 'augment.wasm compiles (WebAssembly SIMD available)');

function randomImage(rng: Rng, n: number): Uint8Array {
  const img = new Uint8Array(n);
  for (let i = 0; i < n; i++) img[i] = rng.nextUint32() & 255;
  return img;
}

/** Runs both implementations into one SharedArrayBuffer batch; returns the max abs difference. */
function compare(js: Augmenter, wa: WasmAugmenter, src: Uint8Array, w: number, h: number, box: CropBox, norm: Normalisation): number {
  const n = js.channels * js.res * js.res;
  const a = new Float32Array(n + 5).fill(-999);
  const b = new Float32Array(new SharedArrayBuffer((n + 5) * 4)).fill(-999);
  js.run(src, w, h, box, norm, a, 3);
  wa.run(src, w, h, box, norm, b, 3);
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= max)) max = d; // NaN propagates as a failure
  }
  if (b[2] !== -999 || b[n + 3] !== -999) return Infinity; // wrote outside its slot
  return max;
}

interface Case {
  w: number;
  h: number;
  c: number;
  res: number;
  n: number;
}

const CASES: Case[] = [
  { w: 64, h: 64, c: 3, res: 64, n: 120 },
  { w: 64, h: 48, c: 3, res: 64, n: 120 },
  { w: 48, h: 64, c: 3, res: 64, n: 60 },
  { w: 28, h: 28, c: 1, res: 28, n: 120 },
  { w: 500, h: 375, c: 3, res: 64, n: 25 },
  { w: 500, h: 375, c: 1, res: 64, n: 25 },
  { w: 64, h: 48, c: 3, res: 32, n: 60 }, // shrinking by ~2: area tables that still fit a window
  { w: 37, h: 23, c: 3, res: 30, n: 60 }, // res not a multiple of 4
  { w: 9, h: 7, c: 4, res: 9, n: 40 },
  { w: 20, h: 16, c: 2, res: 6, n: 40 },
];

for (const k of CASES) {
  t.test(`matches Augmenter: ${k.w}x${k.h}x${k.c} -> ${k.res}`, async (t) => {
    const js = new Augmenter(k.res, k.c);
    const wa = new WasmAugmenter(k.res, k.c);
    const rng = new Rng(42, k.w, k.h, k.c, k.res);
    const norm = k.c === 3 ? IMAGENET : normalisation(Array(k.c).fill(33.3), Array(k.c).fill(78.6));
    let worst = 0;
    let flips = 0;
    for (let i = 0; i < k.n; i++) {
      const src = randomImage(rng, k.w * k.h * k.c);
      let box: CropBox;
      if (i % 4 === 3) box = { ...centerCrop(k.w, k.h, [1, 0.875, 0.5, 0.3][(i % 16) >> 2]!), flip: (i & 8) !== 0 };
      else box = randomResizedCrop(7, 1, i, k.w, k.h, DEFAULT_AUGMENT);
      if (box.flip) flips++;
      worst = Math.max(worst, compare(js, wa, src, k.w, k.h, box, norm));
    }
    // Identity normalisation: raw 0..255 values, relative error only.
    const ident = normalisation(Array(k.c).fill(0), Array(k.c).fill(1));
    const src = randomImage(rng, k.w * k.h * k.c);
    const identDiff = compare(js, wa, src, k.w, k.h, randomResizedCrop(8, 0, 0, k.w, k.h, DEFAULT_AUGMENT), ident);
    t.ok(flips > 0 && flips < k.n, 'both flip settings exercised');
    t.ok(worst <= TOL, `max abs difference ${worst} <= ${TOL} (normalised)`);
    t.ok(identDiff <= 255 * 1e-5, `max abs difference ${identDiff} on 0..255 values`);
  });
}

t.test('whole image, every flip, every channel count 1..4, including 1-pixel axes', async (t) => {
  const rng = new Rng(5);
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
          const d = compare(new Augmenter(res, c), new WasmAugmenter(res, c), src, w, h, { x: 0, y: 0, width: w, height: h, flip }, norm);
          if (!(d <= TOL)) t.fail(`${w}x${h}x${c} -> ${res} flip=${flip}: diff ${d}`);
        }
      }
    }
  }
  t.pass('all sizes agree');
});

t.test('one augmenter reused across sizes grows its memory and stays correct', async (t) => {
  const js = new Augmenter(64, 3);
  const wa = new WasmAugmenter(64, 3);
  const rng = new Rng(9);
  const sizes = [
    [64, 48],
    [500, 375],
    [64, 64],
    [1024, 768],
    [32, 32],
    [500, 375],
  ] as const;
  let worst = 0;
  for (const [w, h] of sizes) {
    const src = randomImage(rng, w * h * 3);
    for (let i = 0; i < 4; i++) worst = Math.max(worst, compare(js, wa, src, w, h, randomResizedCrop(3, 2, i, w, h, DEFAULT_AUGMENT), IMAGENET));
    worst = Math.max(worst, compare(js, wa, src, w, h, centerCrop(w, h), IMAGENET));
  }
  t.ok(worst <= TOL, `max abs difference ${worst}`);
});

t.test('source may be a view with extra bytes around it (Buffer slice of a shard)', async (t) => {
  const rng = new Rng(11);
  const backing = randomImage(rng, 64 * 48 * 3 + 100);
  const src = backing.subarray(37, 37 + 64 * 48 * 3);
  const d = compare(new Augmenter(64, 3), new WasmAugmenter(64, 3), src, 64, 48, { x: 3.5, y: 40, width: 60, height: 8, flip: true }, IMAGENET);
  t.ok(d <= TOL, `diff ${d}`);
});

t.test('gray 28x28 with the default gray normalisation', async (t) => {
  const rng = new Rng(12);
  const src = randomImage(rng, 28 * 28);
  const d = compare(new Augmenter(28, 1), new WasmAugmenter(28, 1), src, 28, 28, { x: 2, y: 5, width: 17, height: 20, flip: true }, GRAY);
  t.ok(d <= TOL, `diff ${d}`);
});

t.test('createAugmenter picks wasm where it can, JS otherwise', async (t) => {
  t.type(createAugmenter(64, 3), WasmAugmenter);
  t.type(createAugmenter(28, 1), WasmAugmenter);
  t.type(createAugmenter(8, 5), Augmenter, 'more channels than the kernel is built for');
  t.equal(WasmAugmenter.create(16, 3).res, 16);
  t.throws(() => new WasmAugmenter(16, 5), RangeError);
  t.throws(() => new WasmAugmenter(0, 3), RangeError);
});

t.test('crop boxes hanging off the image give what Augmenter gives (edge clamping, empty area taps)', async (t) => {
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
        const d = compare(new Augmenter(res, c), new WasmAugmenter(res, c), src, 6, 5, b, norm);
        t.ok(d <= TOL, `${JSON.stringify(b)} c=${c} res=${res}: diff ${d}`);
      }
    }
  }
});

// The hand-computed cases of augment.test.ts, through the wasm path.
const identity1 = normalisation([0], [1]);
const box = (x: number, y: number, width: number, height: number, flip = false): CropBox => ({ x, y, width, height, flip });

function run(
  src: number[],
  w: number,
  h: number,
  c: number,
  res: number,
  b: CropBox,
  norm = c === 1 ? identity1 : normalisation([0, 0, 0], [1, 1, 1]),
): number[] {
  const out = new Float32Array(c * res * res + 2).fill(-999);
  new WasmAugmenter(res, c).run(Uint8Array.from(src), w, h, b, norm, out, 1);
  t.equal(out[0], -999, 'nothing written before the offset');
  t.equal(out[out.length - 1], -999, 'nothing written after the sample');
  return [...out.subarray(1, 1 + c * res * res)].map((v) => Math.round(v * 1000) / 1000);
}

t.test('wasm: identity, flip and crop offsets', async (t) => {
  t.same(run([0, 100, 200, 40], 2, 2, 1, 2, box(0, 0, 2, 2)), [0, 100, 200, 40]);
  t.same(run([0, 100, 200, 40], 2, 2, 1, 2, box(0, 0, 2, 2, true)), [100, 0, 40, 200], 'rows mirrored');
  t.same(run([0, 10, 20, 30], 4, 1, 1, 1, box(2, 0, 1, 1)), [20], 'crop picks pixel x=2');
});

t.test('wasm: area downscale, 2x2 blocks averaged; fractional 3 -> 2 weights', async (t) => {
  const img = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60];
  t.same(run(img, 4, 4, 1, 2, box(0, 0, 4, 4)), [10, 18, 42, 50]);
  t.same(run([0, 30, 60, 0, 30, 60, 0, 30, 60], 3, 3, 1, 2, box(0, 0, 3, 3)), [10, 50, 10, 50]);
});

t.test('wasm: bilinear upscale 2 -> 4 as PIL computes it', async (t) => {
  const out = run([0, 100, 0, 100], 2, 2, 1, 4, box(0, 0, 2, 2));
  t.same(out.slice(0, 4), [0, 25, 75, 100]);
  t.same(out.slice(12, 16), [0, 25, 75, 100], 'rows identical since the columns are');
});

t.test('wasm: RGB comes out planar C,H,W and normalised per channel', async (t) => {
  const out = run([10, 20, 30], 1, 1, 3, 2, box(0, 0, 1, 1), normalisation([10, 10, 10], [1, 2, 4]));
  t.same(out, [0, 0, 0, 0, 5, 5, 5, 5, 5, 5, 5, 5]);
  t.same(run([1, 2, 3, 4, 5, 6], 2, 1, 3, 1, box(0, 0, 1, 1, true)), [1, 2, 3]);
  t.same(run([1, 2, 3, 4, 5, 6], 2, 1, 3, 1, box(1, 0, 1, 1)), [4, 5, 6]);
});
