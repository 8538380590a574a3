// Seeded, portable randomness. Everything that decides an order or a pixel is a pure function
// of integer seeds, so the same job gives the same bytes on any machine and in any worker.

/** 32-bit mix of any number of integers (murmur3 finaliser over a running hash). */
export function hash32(...values: number[]): number {
  let h = 0x9e3779b9;
  for (const v of values) {
    // Split into two 32-bit halves so seeds above 2^32 still mix in.
    const lo = v >>> 0;
    const hi = Math.floor(v / 4294967296) >>> 0;
    h = Math.imul(h ^ lo, 0x85ebca6b);
    h = (h << 13) | (h >>> 19);
    h = Math.imul(h ^ hi, 0xc2b2ae35);
    h ^= h >>> 16;
  }
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** sfc32: small, fast, passes PractRand; state seeded through hash32 so nearby seeds diverge. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(...seed: number[]) {
    this.a = hash32(...seed, 1);
    this.b = hash32(...seed, 2);
    this.c = hash32(...seed, 3);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.nextUint32();
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

  /** Uniform in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, n), without modulo bias. */
  below(n: number): number {
    if (n <= 0 || n > 4294967296) throw new RangeError(`Rng.below: n out of range: ${n}`);
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }
}

/** A seeded Fisher-Yates permutation of 0..n-1. */
export function permutation(n: number, ...seed: number[]): Uint32Array {
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  const rng = new Rng(...seed);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const tmp = out[i]!;
    out[i] = out[j]!;
    out[j] = tmp;
  }
  return out;
}
