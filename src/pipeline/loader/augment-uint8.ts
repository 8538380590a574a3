// The uint8 output of the augmentation (uint8 frames): crop box -> res x res resample -> flip ->
// round to uint8 C,H,W, no normalisation (the trainer normalises on its device). This is the
// TypeScript reference of the WebAssembly kernel's run_u8 and must give the same bytes, so unlike
// Augmenter (which computes in double and rounds once per stored value) it repeats the kernel's
// float32 operations one by one: every product and sum goes through Math.fround. Rounding a
// double result of two float32 operands to float32 gives the float32 operation's own result
// (double has more than 2 x 24 + 2 bits), so this is exact, not approximately equal.
//
// Rounding to a byte: to nearest, ties to even (IEEE's default, WebAssembly's f32x4.nearest,
// numpy's rint), then clamped to 0..255.
import { AxisTable } from '../image/axis-table.ts';
import type { CropBox } from './augment-params.ts';

const f = Math.fround;

/** A float32 value -> 0..255, to nearest, ties to even; NaN -> 0 (as the kernel's trunc_sat). */
export function roundToByte(v: number): number {
  if (!(v > 0)) return 0;
  if (v >= 255) return 255;
  const r = Math.round(v); // ties go up: bring an odd tie down to the even neighbour
  return r - v === 0.5 && (r & 1) === 1 ? r - 1 : r;
}

export class Uint8Augmenter {
  private readonly xs: AxisTable;
  private readonly ys: AxisTable;
  /** Horizontal pass output, planar: [c][row - ys.lo][x]; float32 as in the kernel. */
  private tmp: Float32Array;

  constructor(
    readonly res: number,
    readonly channels: number,
  ) {
    this.xs = new AxisTable(res);
    this.ys = new AxisTable(res);
    this.tmp = new Float32Array(channels * res * res * 2);
  }

  /** Resample `box` of the HWC uint8 image `src` into out[offset .. offset + c*res*res) as uint8 C,H,W. */
  run(src: Uint8Array, width: number, height: number, box: CropBox, out: Uint8Array, offset: number): void {
    const res = this.res;
    const C = this.channels;
    const xs = this.xs.fill(width, box.x, box.width);
    const ys = this.ys.fill(height, box.y, box.height);
    const rows = ys.hi - ys.lo;
    const plane = rows * res;
    if (this.tmp.length < C * plane) this.tmp = new Float32Array(C * plane);
    const tmp = this.tmp;
    const { start, count, weights, stride } = xs;
    for (let r = 0; r < rows; r++) {
      const rowBase = (ys.lo + r) * width * C;
      for (let x = 0; x < res; x++) {
        const ox = r * res + (box.flip ? res - 1 - x : x);
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
    const resSq = res * res;
    for (let c = 0; c < C; c++) {
      const tBase = c * plane;
      const oBase = offset + c * resSq;
      for (let y = 0; y < res; y++) {
        const a = tBase + (ys.start[y]! - ys.lo) * res;
        const o = oBase + y * res;
        const wb = y * ys.stride;
        const n = ys.count[y]!;
        for (let x = 0; x < res; x++) {
          let acc = 0;
          for (let k = 0; k < n; k++) acc = f(acc + f(ys.weights[wb + k]! * tmp[a + k * res + x]!));
          out[o + x] = roundToByte(acc);
        }
      }
    }
  }
}
