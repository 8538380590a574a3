// The per-image hot loop in TypeScript: crop box -> res x res separable resample (area weights
// when shrinking, bilinear when enlarging: ../image/axis-table.ts), the horizontal flip folded
// into the horizontal pass, written as C,H,W straight into the batch slot. Everything it touches
// is preallocated; nothing allocates per image.
//
// The target array's type picks the output:
//   Float32Array       v * scale[c] + bias[c] (normalised values, float32 frames), computed in
//                      float32;
//   Uint8ClampedArray  pixels (uint8 frames), resampled in 16-bit fixed point as 8-bit image
//                      resizers do (Pillow, OpenCV): the same tables, their weights as Q14
//                      integers (quantise), rounded half up. Within one step of the float32
//                      resample rounded; from it unrounded, at most 0.5 + 1/256 +
//                      (taps - 1) * 255/32768 per axis steps (0.52 for two-tap crops).
//
// It is the reference and fallback of the WebAssembly kernel (wasm/resample.c) and gives its
// bits. Float32: every product and sum goes through Math.fround in the kernel's order (the final
// one through the Float32Array store); a double result of one operation on float32 operands,
// rounded to float32, is the float32 operation's own result (double has more than 2 x 24 + 2
// bits). uint8: integer operations, exact in doubles.
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

/** Fixed point of the uint8 path (resample.c): weights in Q14, horizontal results in Q7. */
const ONE = 1 << 14;
/** Rounds the horizontal result to Q7 and adds half a pixel that the vertical shift rounds with. */
const H_BIAS = 64 + (64 << 7);

/**
 * One output's `n` float32 weights (w[base..]) as Q14 integers summing to exactly ONE
 * (q[qBase..], zero-padded to `stride`): cumulative rounding, the last weight takes the rest.
 * The kernel's double operations in its order.
 */
export function quantise(w: Float32Array, base: number, n: number, q: Int32Array, qBase: number, stride: number): void {
  let cum = 0;
  let prev = 0;
  for (let k = 0; k < n; k++) {
    cum += w[base + k]!;
    const qc = k === n - 1 ? ONE : Math.floor(cum * ONE + 0.5);
    q[qBase + k] = qc - prev;
    prev = qc;
  }
  for (let k = Math.max(0, n); k < stride; k++) q[qBase + k] = 0;
}

export class Resampler implements ImageResampler {
  private readonly xs: AxisTable;
  private readonly ys: AxisTable;
  /** Horizontal pass output, planar: [c][row - ys.lo][x]. */
  private tmp: Float32Array;
  /** The uint8 path's: Q7 integers, and its Q14 weights (every column's, every row's). */
  private tmpQ = new Int32Array(0);
  private xq = new Int32Array(0);
  private yq = new Int32Array(0);

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
    if (out instanceof Uint8ClampedArray) {
      this.runFixed(src, width, rows, box.flip, out, offset);
      return;
    }
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

  /** uint8 targets: the kernel's fixed-point passes (resample.c run_u8), integer for integer. */
  private runFixed(src: Uint8Array, width: number, rows: number, flip: boolean, out: Uint8ClampedArray, offset: number): void {
    const res = this.res;
    const C = this.channels;
    const xs = this.xs;
    const ys = this.ys;
    const plane = rows * res;
    if (this.tmpQ.length < C * plane) this.tmpQ = new Int32Array(C * plane);
    if (this.xq.length < res * xs.stride) this.xq = new Int32Array(res * xs.stride);
    if (this.yq.length < res * ys.stride) this.yq = new Int32Array(res * ys.stride);
    for (let x = 0; x < res; x++) quantise(xs.weights, x * xs.stride, xs.count[x]!, this.xq, x * xs.stride, xs.stride);
    for (let y = 0; y < res; y++) quantise(ys.weights, y * ys.stride, ys.count[y]!, this.yq, y * ys.stride, ys.stride);
    if (xs.twoTaps && C === 3) this.horizontalFixed3(src, width, ys.lo, rows, flip);
    else this.horizontalFixedAny(src, width, ys.lo, rows, flip);
    this.verticalFixed(out, offset, plane);
  }

  /** RGB, two taps: acc = a * q0 + b * q1 per channel, kept as (acc + H_BIAS) >> 7. */
  private horizontalFixed3(src: Uint8Array, width: number, lo: number, rows: number, flip: boolean): void {
    const res = this.res;
    const tmp = this.tmpQ;
    const start = this.xs.start;
    const q = this.xq;
    const p1 = rows * res;
    const p2 = 2 * p1;
    for (let r = 0; r < rows; r++) {
      const rowBase = (lo + r) * width * 3;
      const tRow = r * res;
      for (let x = 0; x < res; x++) {
        const ox = flip ? tRow + res - 1 - x : tRow + x;
        const s = rowBase + start[x]! * 3;
        const q0 = q[2 * x]!;
        const q1 = q[2 * x + 1]!;
        tmp[ox] = (src[s]! * q0 + src[s + 3]! * q1 + H_BIAS) >> 7;
        tmp[p1 + ox] = (src[s + 1]! * q0 + src[s + 4]! * q1 + H_BIAS) >> 7;
        tmp[p2 + ox] = (src[s + 2]! * q0 + src[s + 5]! * q1 + H_BIAS) >> 7;
      }
    }
  }

  private horizontalFixedAny(src: Uint8Array, width: number, lo: number, rows: number, flip: boolean): void {
    const res = this.res;
    const C = this.channels;
    const tmp = this.tmpQ;
    const { start, count, stride } = this.xs;
    const q = this.xq;
    const plane = rows * res;
    for (let r = 0; r < rows; r++) {
      const rowBase = (lo + r) * width * C;
      const tRow = r * res;
      for (let x = 0; x < res; x++) {
        const ox = flip ? tRow + res - 1 - x : tRow + x;
        const s = rowBase + start[x]! * C;
        const qb = x * stride;
        const n = count[x]!;
        for (let c = 0; c < C; c++) {
          let acc = 0;
          for (let k = 0; k < n; k++) acc += src[s + k * C + c]! * q[qb + k]!;
          tmp[c * plane + ox] = (acc + H_BIAS) >> 7;
        }
      }
    }
  }

  /** out = sum(t * q) >> 21: the Q7 value (carrying half a pixel) rounded down to a byte. */
  private verticalFixed(out: Uint8ClampedArray, offset: number, plane: number): void {
    const res = this.res;
    const tmp = this.tmpQ;
    const { start, count, stride, lo, twoTaps } = this.ys;
    const q = this.yq;
    for (let c = 0; c < this.channels; c++) {
      for (let y = 0; y < res; y++) {
        const a = c * plane + (start[y]! - lo) * res;
        const o = offset + c * res * res + y * res;
        const qb = y * stride;
        if (twoTaps) {
          const q0 = q[qb]!;
          const q1 = q[qb + 1]!;
          const b = a + res;
          for (let x = 0; x < res; x++) out[o + x] = (tmp[a + x]! * q0 + tmp[b + x]! * q1) >> 21;
        } else {
          const n = count[y]!;
          for (let x = 0; x < res; x++) {
            let acc = 0;
            for (let k = 0; k < n; k++) acc += tmp[a + k * res + x]! * q[qb + k]!;
            out[o + x] = acc >> 21;
          }
        }
      }
    }
  }
}
