// Per-axis resampling tables. Resizing is separable, so each axis gets, for every output index,
// the first source index it reads, how many it reads, and their normalised weights. A shard job
// resizes thousands of images of the same few sizes, hence the small LRU in front.

export interface AxisWeights {
  /** First source index read by output i. */
  start: Int32Array;
  /** Number of source indices read by output i. */
  count: Int32Array;
  /** Weights of output i at weights[i * stride .. i * stride + count[i]), summing to 1. */
  weights: Float32Array;
  stride: number;
  /** Lowest and one past the highest source index read by any output. */
  lo: number;
  hi: number;
  /** Every output reads exactly two source indices (bilinear): lets loops unroll. */
  twoTaps: boolean;
}

// Weights below this are float noise from boundaries that should have been integers.
const EPS = 1e-6;

/**
 * Area ("box with fractional edges", OpenCV INTER_AREA): output i is the exact mean over the
 * source interval [c0 + i*len/out, c0 + (i+1)*len/out), each source pixel weighted by how much of
 * it the interval covers. Used whenever len >= out; at len === out it is a (sub)pixel shift,
 * which is also exactly what bilinear would give, so the two regimes meet continuously.
 */
function areaWeights(inSize: number, outSize: number, c0: number, len: number): AxisWeights {
  const scale = len / outSize;
  const stride = Math.ceil(scale) + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float32Array(outSize * stride);
  for (let i = 0; i < outSize; i++) {
    // (i * len) / out rather than i * scale keeps integer boundaries exact for integer ratios.
    const a = Math.max(0, c0 + (i * len) / outSize);
    const b = Math.min(inSize, c0 + ((i + 1) * len) / outSize);
    let j0 = Math.floor(a);
    let j1 = Math.min(inSize, Math.ceil(b)); // exclusive
    if (j1 - j0 > 1 && Math.min(b, j0 + 1) - a < EPS) j0++;
    if (j1 - j0 > 1 && b - Math.max(a, j1 - 1) < EPS) j1--;
    if (j1 - j0 > stride) j1 = j0 + stride; // cannot happen, keeps writes in bounds regardless
    const base = i * stride;
    let sum = 0;
    for (let j = j0; j < j1; j++) {
      const w = Math.max(0, Math.min(b, j + 1) - Math.max(a, j));
      weights[base + j - j0] = w;
      sum += w;
    }
    start[i] = j0;
    count[i] = j1 - j0;
    normalise(weights, base, j1 - j0, sum);
  }
  return finish(start, count, weights, stride);
}

/**
 * Bilinear upscaling as PIL's BILINEAR computes it when upscaling: a triangle filter of support 1
 * around each output centre c0 + (i + 0.5) * scale, source pixel centres at j + 0.5, taps outside
 * the image dropped and the rest renormalised (so edges replicate). Taps may fall outside the crop
 * rectangle but inside the image, as in PIL: they are real neighbouring pixels.
 */
function bilinearWeights(inSize: number, outSize: number, c0: number, len: number): AxisWeights {
  const scale = len / outSize;
  // Always exactly two taps (the second may weigh 0), so the resampling loops can unroll; a
  // 1-pixel axis is the only exception.
  const stride = 2;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize).fill(inSize > 1 ? 2 : 1);
  const weights = new Float32Array(outSize * stride);
  for (let i = 0; i < outSize; i++) {
    const base = i * stride;
    if (inSize === 1) {
      weights[base] = 1;
      continue;
    }
    // Left neighbouring pixel centre and the distance past it; PIL's renormalisation of the
    // taps that remain inside the image amounts to clamping at the edges.
    const pos = c0 + (i + 0.5) * scale - 0.5;
    const j = Math.floor(pos);
    if (j < 0) {
      start[i] = 0;
      weights[base] = 1;
    } else if (j >= inSize - 1) {
      start[i] = inSize - 2;
      weights[base + 1] = 1;
    } else {
      const f = pos - j;
      start[i] = j;
      weights[base] = 1 - f;
      weights[base + 1] = f;
    }
  }
  return finish(start, count, weights, stride);
}

function normalise(weights: Float32Array, base: number, n: number, sum: number): void {
  if (sum <= 0) return;
  const inv = 1 / sum;
  for (let k = 0; k < n; k++) weights[base + k] *= inv;
}

function finish(start: Int32Array, count: Int32Array, weights: Float32Array, stride: number): AxisWeights {
  let lo = Number.MAX_SAFE_INTEGER;
  let hi = 0;
  let twoTaps = stride === 2;
  for (let i = 0; i < start.length; i++) {
    if (start[i] < lo) lo = start[i];
    if (start[i] + count[i] > hi) hi = start[i] + count[i];
    if (count[i] !== 2) twoTaps = false;
  }
  return { start, count, weights, stride, lo, hi, twoTaps };
}

const CACHE_SIZE = 64;
const cache = new Map<string, AxisWeights>();

/**
 * Tables for resampling the source interval [c0, c0 + len) of an axis of inSize pixels onto
 * outSize pixels: area when shrinking (or keeping the size), bilinear when enlarging.
 */
export function axisWeights(inSize: number, outSize: number, c0: number, len: number): AxisWeights {
  const key = `${inSize},${outSize},${c0},${len}`;
  const hit = cache.get(key);
  if (hit !== undefined) {
    // Map iteration order is insertion order: re-inserting marks the entry most recently used.
    cache.delete(key);
    cache.set(key, hit);
    return hit;
  }
  const table = len >= outSize ? areaWeights(inSize, outSize, c0, len) : bilinearWeights(inSize, outSize, c0, len);
  if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value as string);
  cache.set(key, table);
  return table;
}
