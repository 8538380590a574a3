// Per-axis resampling tables. Resizing is separable, so each axis gets, for every output index,
// the first source index it reads, how many it reads, and their normalised weights: area
// ("box with fractional edges", OpenCV INTER_AREA) when shrinking, PIL-style bilinear when
// enlarging. Tables fill preallocated arrays because the loader computes new ones for every
// sample (every crop differs); the shard job's resize caches them (weights.ts).

const EPS = 1e-6;

export class AxisTable {
  start: Int32Array;
  count: Int32Array;
  weights: Float32Array;
  stride = 2;
  /** Lowest and one past the highest source index read. */
  lo = 0;
  hi = 0;
  twoTaps = true;

  constructor(readonly out: number) {
    this.start = new Int32Array(out);
    this.count = new Int32Array(out);
    this.weights = new Float32Array(out * 4);
  }

  /** Resample source interval [c0, c0 + len) of an axis of `inSize` pixels onto `out` pixels. */
  fill(inSize: number, c0: number, len: number): this {
    if (len >= this.out) this.fillArea(inSize, c0, len);
    else this.fillBilinear(inSize, c0, len);
    let lo = inSize;
    let hi = 0;
    let two = true;
    for (let i = 0; i < this.out; i++) {
      const s = this.start[i]!;
      const e = s + this.count[i]!;
      if (s < lo) lo = s;
      if (e > hi) hi = e;
      if (this.count[i] !== 2) two = false;
    }
    this.lo = lo;
    this.hi = hi;
    this.twoTaps = two && this.stride === 2;
    return this;
  }

  private ensure(stride: number): void {
    this.stride = stride;
    if (this.weights.length < this.out * stride) this.weights = new Float32Array(this.out * stride);
  }

  private fillArea(inSize: number, c0: number, len: number): void {
    const out = this.out;
    const stride = Math.ceil(len / out) + 1;
    this.ensure(stride);
    const { start, count, weights } = this;
    for (let i = 0; i < out; i++) {
      const a = Math.max(0, c0 + (i * len) / out);
      const b = Math.min(inSize, c0 + ((i + 1) * len) / out);
      let j0 = Math.floor(a);
      let j1 = Math.min(inSize, Math.ceil(b));
      if (j1 - j0 > 1 && Math.min(b, j0 + 1) - a < EPS) j0++;
      if (j1 - j0 > 1 && b - Math.max(a, j1 - 1) < EPS) j1--;
      if (j1 - j0 > stride) j1 = j0 + stride;
      const base = i * stride;
      let sum = 0;
      for (let j = j0; j < j1; j++) {
        const w = Math.max(0, Math.min(b, j + 1) - Math.max(a, j));
        weights[base + j - j0] = w;
        sum += w;
      }
      const inv = sum > 0 ? 1 / sum : 0;
      for (let k = 0; k < j1 - j0; k++) weights[base + k]! *= inv;
      start[i] = j0;
      count[i] = j1 - j0;
    }
  }

  private fillBilinear(inSize: number, c0: number, len: number): void {
    const out = this.out;
    this.ensure(2);
    const { start, count, weights } = this;
    const scale = len / out;
    for (let i = 0; i < out; i++) {
      const centre = c0 + (i + 0.5) * scale;
      // Taps at the two pixel centres around `centre`, clamped to the image (edges replicate).
      let j = Math.floor(centre - 0.5);
      let frac = centre - 0.5 - j;
      if (j < 0) {
        j = 0;
        frac = 0;
      }
      if (j >= inSize - 1) {
        j = Math.max(0, inSize - 2);
        frac = inSize > 1 ? 1 : 0;
      }
      start[i] = j;
      count[i] = inSize > 1 ? 2 : 1;
      weights[i * 2] = 1 - frac;
      weights[i * 2 + 1] = inSize > 1 ? frac : 0;
    }
  }
}
