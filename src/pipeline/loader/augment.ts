// The per-image hot loop: crop box -> res x res resample (separable), optional horizontal flip,
// per-channel normalisation, written as float32 C,H,W straight into the batch slot. Everything
// it touches is preallocated per worker; nothing allocates per image.
import { AxisTable } from '../image/axis-table.ts';
import type { CropBox } from './augment-params.ts';
import { Uint8Augmenter } from './augment-uint8.ts';

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

  constructor(
    readonly res: number,
    readonly channels: number,
  ) {
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
    if (xs.twoTaps && C === 3) this.horizontal3(src, width, ys.lo, rows, box.flip);
    else this.horizontalAny(src, width, ys.lo, rows, box.flip);
    this.vertical(norm, out, offset, plane);
  }

  private pixels: Uint8Augmenter | null = null;

  /** The same crop as uint8 C,H,W pixels, not normalised (uint8 frames): see augment-uint8.ts. */
  runUint8(src: Uint8Array, width: number, height: number, box: CropBox, out: Uint8Array, offset: number): void {
    (this.pixels ??= new Uint8Augmenter(this.res, this.channels)).run(src, width, height, box, out, offset);
  }

  /** The common case (RGB, crop enlarged): two taps per output, channels unrolled. */
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
        tmp[ox] = w0 * src[s]! + w1 * src[s + 3]!;
        tmp[p1 + ox] = w0 * src[s + 1]! + w1 * src[s + 4]!;
        tmp[p2 + ox] = w0 * src[s + 2]! + w1 * src[s + 5]!;
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
          for (let k = 0; k < n; k++) acc += weights[wb + k]! * src[s + k * C + c]!;
          tmp[c * plane + ox] = acc;
        }
      }
    }
  }

  /** One output plane per channel, normalised on the way out. */
  private vertical(norm: Normalisation, out: Float32Array, offset: number, plane: number): void {
    const res = this.res;
    const C = this.channels;
    const tmp = this.tmp;
    const ys = this.ys;
    const { start, count, weights, stride, lo } = ys;
    const two = ys.twoTaps;
    const resSq = res * res;
    for (let c = 0; c < C; c++) {
      const scale = norm.scale[c]!;
      const bias = norm.bias[c]!;
      const tBase = c * plane;
      const oBase = offset + c * resSq;
      for (let y = 0; y < res; y++) {
        const a = tBase + (start[y]! - lo) * res;
        const o = oBase + y * res;
        const wb = y * stride;
        if (two) {
          const w0 = weights[wb]! * scale;
          const w1 = weights[wb + 1]! * scale;
          const b = a + res;
          for (let x = 0; x < res; x++) out[o + x] = w0 * tmp[a + x]! + w1 * tmp[b + x]! + bias;
        } else {
          const n = count[y]!;
          for (let x = 0; x < res; x++) {
            let acc = 0;
            for (let k = 0; k < n; k++) acc += weights[wb + k]! * tmp[a + k * res + x]!;
            out[o + x] = acc * scale + bias;
          }
        }
      }
    }
  }
}
