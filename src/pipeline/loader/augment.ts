// The per-image hot loop: crop box -> res x res resample (separable), optional horizontal flip,
// per-channel normalisation, written as float32 C,H,W straight into the batch slot. Everything
// it touches is preallocated per worker; nothing allocates per image.
import { AxisTable } from './resample-table.ts';
import type { CropBox } from './augment-params.ts';

export interface Normalisation {
  /** out = pixel * scale[c] + bias[c] (pixel in 0..255). */
  scale: Float32Array;
  bias: Float32Array;
}

/** (pixel - mean) / std with mean and std in 0..255 units, as the paper does (ImageNet x 255). */
export function normalisation(mean: readonly number[], std: readonly number[]): Normalisation {
  const scale = new Float32Array(mean.length);
  const bias = new Float32Array(mean.length);
  for (let c = 0; c < mean.length; c++) {
    scale[c] = 1 / std[c]!;
    bias[c] = -mean[c]! / std[c]!;
  }
  return { scale, bias };
}

export class Augmenter {
  private readonly xs: AxisTable;
  private readonly ys: AxisTable;
  /** Horizontal pass output, planar: [c][row - ys.lo][x]. */
  private tmp: Float32Array;

  constructor(readonly res: number, readonly channels: number) {
    this.xs = new AxisTable(res);
    this.ys = new AxisTable(res);
    this.tmp = new Float32Array(channels * res * res * 2);
  }

  /**
   * Resample `box` of the HWC uint8 image `src` (width x height x this.channels) into
   * out[offset .. offset + c*res*res) as normalised C,H,W float32.
   */
  run(src: Uint8Array, width: number, height: number, box: CropBox, norm: Normalisation, out: Float32Array, offset: number): void {
    const res = this.res;
    const C = this.channels;
    const xs = this.xs.fill(width, box.x, box.width);
    const ys = this.ys.fill(height, box.y, box.height);
    const rows = ys.hi - ys.lo;
    const plane = rows * res;
    if (this.tmp.length < C * plane) this.tmp = new Float32Array(C * plane);
    const tmp = this.tmp;
    const xStart = xs.start;
    const xw = xs.weights;
    const xStride = xs.stride;
    const flip = box.flip;
    // Horizontal pass over only the source rows the vertical pass will read.
    for (let r = 0; r < rows; r++) {
      const rowBase = (ys.lo + r) * width * C;
      const tRow = r * res;
      for (let x = 0; x < res; x++) {
        const ox = tRow + (flip ? res - 1 - x : x);
        const s = rowBase + xStart[x]! * C;
        const wb = x * xStride;
        if (xs.twoTaps) {
          const w0 = xw[wb]!;
          const w1 = xw[wb + 1]!;
          for (let c = 0; c < C; c++) tmp[c * plane + ox] = w0 * src[s + c]! + w1 * src[s + C + c]!;
        } else {
          const n = xs.count[x]!;
          for (let c = 0; c < C; c++) {
            let acc = 0;
            for (let k = 0; k < n; k++) acc += xw[wb + k]! * src[s + k * C + c]!;
            tmp[c * plane + ox] = acc;
          }
        }
      }
    }
    // Vertical pass, one output plane per channel, normalised on the way out.
    const yStart = ys.start;
    const yw = ys.weights;
    const yStride = ys.stride;
    const resSq = res * res;
    for (let c = 0; c < C; c++) {
      const scale = norm.scale[c]!;
      const bias = norm.bias[c]!;
      const tBase = c * plane;
      const oBase = offset + c * resSq;
      for (let y = 0; y < res; y++) {
        const a = tBase + (yStart[y]! - ys.lo) * res;
        const o = oBase + y * res;
        const wb = y * yStride;
        if (ys.twoTaps) {
          const w0 = yw[wb]! * scale;
          const w1 = yw[wb + 1]! * scale;
          const b = a + res;
          for (let x = 0; x < res; x++) out[o + x] = w0 * tmp[a + x]! + w1 * tmp[b + x]! + bias;
        } else {
          const n = ys.count[y]!;
          for (let x = 0; x < res; x++) {
            let acc = 0;
            for (let k = 0; k < n; k++) acc += yw[wb + k]! * tmp[a + k * res + x]!;
            out[o + x] = acc * scale + bias;
          }
        }
      }
    }
  }
}
