// Cached per-axis resampling tables for the shard job's resize: it resizes thousands of images
// of the same few sizes, hence the small LRU in front of axis-table.ts.
import { AxisTable } from './axis-table.ts';

/** The read-only view of an AxisTable that the resize loops use. */
export interface AxisWeights {
  /** First source index read by output i. */
  readonly start: Int32Array;
  /** Number of source indices read by output i. */
  readonly count: Int32Array;
  /** Weights of output i at weights[i * stride .. i * stride + count[i]), summing to 1. */
  readonly weights: Float32Array;
  readonly stride: number;
  /** Lowest and one past the highest source index read by any output. */
  readonly lo: number;
  readonly hi: number;
  /** Every output reads exactly two source indices (bilinear): lets loops unroll. */
  readonly twoTaps: boolean;
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
  const table = new AxisTable(outSize).fill(inSize, c0, len);
  if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value as string);
  cache.set(key, table);
  return table;
}
