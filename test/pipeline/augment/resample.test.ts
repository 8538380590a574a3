// The resampler's hand-computed cases, through both kernels (TypeScript and WebAssembly) and both
// target types.
import t, { type Test } from 'tap';
import type { CropBox } from '../../../src/pipeline/augment/crop-box.ts';
import { normalisation, type Normalisation } from '../../../src/pipeline/augment/normalisation.ts';
import { Resampler, type ImageResampler } from '../../../src/pipeline/augment/resample.ts';
import { WasmResampler } from '../../../src/pipeline/augment/wasm/resample-wasm.ts';

const KERNELS: Array<[string, (res: number, c: number) => ImageResampler]> = [
  ['ts', (res, c) => new Resampler(res, c)],
  ['wasm', (res, c) => new WasmResampler(res, c)],
];
const box = (x: number, y: number, width: number, height: number, flip = false): CropBox => ({ x, y, width, height, flip });

for (const [name, make] of KERNELS) {
  /** Float32 values, rounded to 1e-3 for hand-computed comparisons; checks nothing lands outside the slot. */
  function run(t: Test, src: number[], w: number, h: number, c: number, res: number, b: CropBox, norm?: Normalisation): number[] {
    const out = new Float32Array(c * res * res + 2).fill(-999);
    make(res, c).run(Uint8Array.from(src), w, h, b, out, 1, norm);
    t.equal(out[0], -999, 'nothing written before the offset');
    t.equal(out[out.length - 1], -999, 'nothing written after the sample');
    return [...out.subarray(1, 1 + c * res * res)].map((v) => Math.round(v * 1000) / 1000);
  }

  t.test(`${name}: identity, flip and crop offsets`, async (t) => {
    t.same(run(t, [0, 100, 200, 40], 2, 2, 1, 2, box(0, 0, 2, 2)), [0, 100, 200, 40]);
    t.same(run(t, [0, 100, 200, 40], 2, 2, 1, 2, box(0, 0, 2, 2, true)), [100, 0, 40, 200], 'rows mirrored');
    t.same(run(t, [0, 10, 20, 30], 4, 1, 1, 1, box(2, 0, 1, 1)), [20], 'crop picks pixel x=2');
  });

  t.test(`${name}: area downscale: 2x2 blocks averaged; fractional 3 -> 2 weights (hand-computed)`, async (t) => {
    // 4x4 -> 2x2: each output is the mean of a 2x2 block.
    const img = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60];
    t.same(run(t, img, 4, 4, 1, 2, box(0, 0, 4, 4)), [10, 18, 42, 50]);
    // 3x3 -> 2x2 on a horizontal ramp [0, 30, 60]: out0 = (0*1 + 30*0.5) / 1.5 = 10,
    // out1 = (30*0.5 + 60*1) / 1.5 = 50; rows are equal so the vertical pass keeps them.
    t.same(run(t, [0, 30, 60, 0, 30, 60, 0, 30, 60], 3, 3, 1, 2, box(0, 0, 3, 3)), [10, 50, 10, 50]);
  });

  t.test(`${name}: bilinear upscale 2 -> 4 as PIL computes it (hand-computed)`, async (t) => {
    // Output centres at 0.25, 0.75, 1.25, 1.75 in source pixels; pixel centres at 0.5 and 1.5:
    // 0.25 -> edge (0), 0.75 -> 0.75*0 + 0.25*100 = 25, 1.25 -> 75, 1.75 -> edge (100).
    const out = run(t, [0, 100, 0, 100], 2, 2, 1, 4, box(0, 0, 2, 2));
    t.same(out.slice(0, 4), [0, 25, 75, 100]);
    t.same(out.slice(12, 16), [0, 25, 75, 100], 'rows identical since the columns are');
  });

  t.test(`${name}: RGB comes out planar C,H,W and normalised per channel`, async (t) => {
    // A 1x1 RGB pixel (10, 20, 30) upscaled to 2x2; mean (10, 10, 10), std (1, 2, 4).
    t.same(run(t, [10, 20, 30], 1, 1, 3, 2, box(0, 0, 1, 1), normalisation([10, 10, 10], [1, 2, 4])), [0, 0, 0, 0, 5, 5, 5, 5, 5, 5, 5, 5]);
    // 2x1 RGB, flipped: planes keep their channel, pixels swap.
    t.same(run(t, [1, 2, 3, 4, 5, 6], 2, 1, 3, 1, box(0, 0, 1, 1, true)), [1, 2, 3]);
    t.same(run(t, [1, 2, 3, 4, 5, 6], 2, 1, 3, 1, box(1, 0, 1, 1)), [4, 5, 6]);
  });

  t.test(`${name}: a uint8 target holds the rounded pixels and takes no normalisation`, async (t) => {
    const k = make(4, 1);
    const out = new Uint8ClampedArray(18).fill(0xee);
    // Bilinear 2 -> 4 on [0, 10]: 0, 2.5 -> 3 (ties half up), 7.5 -> 8, 10.
    k.run(Uint8Array.from([0, 10, 0, 10]), 2, 2, box(0, 0, 2, 2), out, 1);
    t.same([...out.subarray(1, 5)], [0, 3, 8, 10]);
    t.equal(out[0], 0xee, 'nothing written before the offset');
    t.equal(out[17], 0xee, 'nothing written after the sample');
    t.throws(() => k.run(Uint8Array.from([0, 10, 0, 10]), 2, 2, box(0, 0, 2, 2), out, 1, normalisation([0], [1])), RangeError);
  });
}
