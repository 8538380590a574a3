// Seeded, portable randomness shared by the pipeline (shuffles, augmentation, synthetic data) and
// the trainer (init, MixUp). Everything that decides an order or a pixel is a pure function of
// integer seeds, so a job gives the same bytes on any machine and in any thread; the whole
// generator state is four uint32 words, so a checkpoint can store it and a resumed run draws
// exactly the numbers an uninterrupted run would have drawn.

export type RngState = [number, number, number, number];

const HASH_START = 0x9e3779b9;

/** One value into a running hash (murmur3-style); splits values above 2^32 so large seeds mix in. */
function mixIn(h: number, v: number): number {
  const lo = v >>> 0;
  const hi = Math.floor(v / 4294967296) >>> 0;
  h = Math.imul(h ^ lo, 0x85ebca6b);
  h = (h << 13) | (h >>> 19);
  h = Math.imul(h ^ hi, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

function finalise(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** 32-bit mix of any number of integers. */
export function hash32(...values: number[]): number {
  let h = HASH_START;
  for (const v of values) h = mixIn(h, v);
  return finalise(h);
}

/** sfc32 (passes PractRand), seeded from any list of integers. */
export class Rng {
  private a = 0;
  private b = 0;
  private c = 0;
  private d = 1;

  constructor(...seed: number[]) {
    // hash32(...seed, k) for k = 1, 2, 3, with the seed's running hash computed once: a loader
    // worker builds one generator per sample (bench loader-stages, crop_params).
    let h = HASH_START;
    for (const v of seed) h = mixIn(h, v);
    this.a = finalise(mixIn(h, 1));
    this.b = finalise(mixIn(h, 2));
    this.c = finalise(mixIn(h, 3));
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  static fromState(state: RngState): Rng {
    const r = new Rng(0);
    r.setState(state);
    return r;
  }

  getState(): RngState {
    return [this.a >>> 0, this.b >>> 0, this.c >>> 0, this.d >>> 0];
  }

  setState(state: RngState): void {
    if (state.length !== 4 || state.some((v) => !Number.isInteger(v) || v < 0 || v > 0xffffffff)) {
      throw new RangeError(`Rng.setState: expected four uint32 words, got ${JSON.stringify(state)}`);
    }
    [this.a, this.b, this.c, this.d] = state.map((v) => v | 0) as RngState;
  }

  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, n), without modulo bias. */
  below(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > 4294967296) throw new RangeError(`Rng.below: n out of range: ${n}`);
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** Standard normal (Box-Muller; the second value is dropped so the state stays four words). */
  normal(): number {
    const u = 1 - this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Gamma(shape, 1) by Marsaglia-Tsang; shape < 1 through the boost Gamma(shape + 1) * U^(1/shape). */
  gamma(shape: number): number {
    if (!(shape > 0)) throw new RangeError(`Rng.gamma: shape must be > 0, got ${shape}`);
    if (shape < 1) return this.gamma(shape + 1) * Math.pow(1 - this.next(), 1 / shape);
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      let x: number;
      let v: number;
      do {
        x = this.normal();
        v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const u = 1 - this.next();
      if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
    }
  }

  /** Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b). */
  beta(a: number, b: number): number {
    const x = this.gamma(a);
    const y = this.gamma(b);
    return x / (x + y);
  }

  /** A Fisher-Yates permutation of 0..n-1, drawn from this generator. */
  permutation(n: number): Int32Array {
    return fisherYates(new Int32Array(n), this);
  }
}

export function seedHash(...values: number[]): number {
  return hash32(...values);
}

/** A seeded Fisher-Yates permutation of 0..n-1 (Uint32: datasets can exceed 2^31 samples). */
export function permutation(n: number, ...seed: number[]): Uint32Array {
  return fisherYates(new Uint32Array(n), new Rng(...seed));
}

/** Fills `out` with 0..n-1 and shuffles it in place. */
function fisherYates<T extends Int32Array | Uint32Array>(out: T, rng: Rng): T {
  for (let i = 0; i < out.length; i++) out[i] = i;
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const tmp = out[i]!;
    out[i] = out[j]!;
    out[j] = tmp;
  }
  return out;
}
