// The per-image hot loop in TypeScript: crop box -> res x res separable resample (area weights
// when shrinking, bilinear when enlarging: ../image/axis-table.ts), the horizontal flip folded
// into the horizontal pass, written as C,H,W straight into the batch slot. Everything it touches
// is preallocated; nothing allocates per image.
//
// One implementation for both frame types; the target array's type picks the output:
//   Float32Array       v * scale[c] + bias[c] (normalised values, float32 frames);
//   Uint8ClampedArray  the pixel v, rounded to nearest, ties to even, and clamped to 0..255
//                      (uint8 frames): exactly what a Uint8ClampedArray store does to a number
//                      (ECMAScript's ToUint8Clamp), and what the kernel's f32x4.nearest and
//                      saturating narrowing do.
//
// It is the reference and fallback of the WebAssembly kernel (wasm/resample.c) and repeats the
// kernel's float32 operations one by one: every product and sum goes through Math.fround (the
// final one through the Float32Array store). A double result of one operation on float32
// operands, rounded to float32, is the float32 operation's own result (double has more than
// 2 x 24 + 2 bits), so both give the same bits, not merely close values.
import { AxisTable } from '../image/axis-table.ts';
import type { CropBox } from './crop-box.ts';
import type { Normalisation } from './normalisation.ts';

/** Where a resampled image goes; the array type picks float32 values or rounded bytes. */
export type ResampleTarget = Float32Array | Uint8ClampedArray;

/** The TypeScript kernel and the WebAssembly one. */
export interface ImageResampler {
  readonly res: number;
  readonly channels: number;
  /**
   * Resample `box` of the HWC uint8 image `src` (width x height x channels) into
   * out[offset .. offset + channels*res*res) as C,H,W. `norm` applies to float32 targets only
   * (absent: the 0..255 values as they are); a uint8 target holds pixels, never normalised.
   */
  run(src: Uint8Array, width: number, height: number, box: CropBox, out: ResampleTarget, offset: number, norm?: Normalisation): void;
}

/** RangeError unless `norm` suits `out` (none for a uint8 target: its consumer normalises). */
export function checkTarget(out: ResampleTarget, norm: Normalisation | undefined): void {
  if (norm !== undefined && out instanceof Uint8ClampedArray)
    throw new RangeError('a uint8 target holds pixels: its consumer normalises them, pass no normalisation');
}

const f = Math.fround;

export class Resampler implements ImageResampler {
  private readonly xs: AxisTable;
  private readonly ys: AxisTable;
  /** Horizontal pass output, planar: [c][row - ys.lo][x]. */
  private tmp: Float32Array;

  constructor(
    readonly res: number,
    readonly channels: number,
  ) {
    this.xs = new AxisTable(res);
    this.ys = new AxisTable(res);
    this.tmp = new Float32Array(channels * res * res * 2);
  }

  run(src: Uint8Array, width: number, height: number, box: CropBox, out: ResampleTarget, offset: number, norm?: Normalisation): void {
    checkTarget(out, norm);
    const res = this.res;
    const C = this.channels;
    const xs = this.xs.fill(width, box.x, box.width);
    const ys = this.ys.fill(height, box.y, box.height);
    const rows = ys.hi - ys.lo;
    const plane = rows * res;
    if (this.tmp.length < C * plane) this.tmp = new Float32Array(C * plane);
    if (xs.twoTaps && C === 3) this.horizontal3(src, width, ys.lo, rows, box.flip);
    else this.horizontalAny(src, width, ys.lo, rows, box.flip);
    this.vertical(out, offset, plane, norm);
  }

  /** The common case (RGB, two taps per output), channels unrolled: (w0 * a) + (w1 * b). */
  private horizontal3(src: Uint8Array, width: number, lo: number, rows: number, flip: boolean): void {
    const res = this.res;
    const tmp = this.tmp;
    const start = this.xs.start;
    const w = this.xs.weights;
    const plane = rows * res;
    const p1 = plane;
    const p2 = 2 * plane;
    for (let r = 0; r < rows; r++) {
      const rowBase = (lo + r) * width * 3;
      const tRow = r * res;
      for (let x = 0; x < res; x++) {
        const ox = flip ? tRow + res - 1 - x : tRow + x;
        const s = rowBase + start[x]! * 3;
        const w0 = w[2 * x]!;
        const w1 = w[2 * x + 1]!;
        tmp[ox] = f(w0 * src[s]!) + f(w1 * src[s + 3]!);
        tmp[p1 + ox] = f(w0 * src[s + 1]!) + f(w1 * src[s + 4]!);
        tmp[p2 + ox] = f(w0 * src[s + 2]!) + f(w1 * src[s + 5]!);
      }
    }
  }

  private horizontalAny(src: Uint8Array, width: number, lo: number, rows: number, flip: boolean): void {
    const res = this.res;
    const C = this.channels;
    const tmp = this.tmp;
    const { start, count, weights, stride } = this.xs;
    const plane = rows * res;
    for (let r = 0; r < rows; r++) {
      const rowBase = (lo + r) * width * C;
      const tRow = r * res;
      for (let x = 0; x < res; x++) {
        const ox = flip ? tRow + res - 1 - x : tRow + x;
        const s = rowBase + start[x]! * C;
        const wb = x * stride;
        const n = count[x]!;
        for (let c = 0; c < C; c++) {
          let acc = 0;
          for (let k = 0; k < n; k++) acc = f(acc + f(weights[wb + k]! * src[s + k * C + c]!));
          tmp[c * plane + ox] = acc;
        }
      }
    }
  }

  /** One output plane per channel; the scale folds into two-tap weights, as the kernel does. */
  private vertical(out: ResampleTarget, offset: number, plane: number, norm: Normalisation | undefined): void {
    const res = this.res;
    const C = this.channels;
    const tmp = this.tmp;
    const ys = this.ys;
    const { start, count, weights, stride, lo } = ys;
    const two = ys.twoTaps;
    const resSq = res * res;
    for (let c = 0; c < C; c++) {
      const scale = norm ? norm.scale[c]! : 1;
      const bias = norm ? norm.bias[c]! : 0;
      const tBase = c * plane;
      const oBase = offset + c * resSq;
      for (let y = 0; y < res; y++) {
        const a = tBase + (start[y]! - lo) * res;
        const o = oBase + y * res;
        const wb = y * stride;
        if (two) {
          const w0 = f(weights[wb]! * scale);
          const w1 = f(weights[wb + 1]! * scale);
          const b = a + res;
          for (let x = 0; x < res; x++) out[o + x] = f(f(w0 * tmp[a + x]!) + f(w1 * tmp[b + x]!)) + bias;
        } else {
          const n = count[y]!;
          for (let x = 0; x < res; x++) {
            let acc = 0;
            for (let k = 0; k < n; k++) acc = f(acc + f(weights[wb + k]! * tmp[a + k * res + x]!));
            out[o + x] = f(acc * scale) + bias;
          }
        }
      }
    }
  }
}
