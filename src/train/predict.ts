// Evaluation with per-sample results: the centre-crop pass (loss, top-1/top-5 and each sample's
// top-1 class), test-time augmentation (softmax probabilities averaged over views, as the
// reference's test_time_aug), and ImageNet ReaL scoring.
//
// Samples are identified by their position in the feed's epoch (eval order) and, where the feed's
// batches carry them (the ring loader's do), by their shard keys. The DataFeed contract has no
// keys; a batch with a `keys` array is read structurally.
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import type { Mlp } from '../model/mlp.ts';
import type { Batch, DataFeed } from '../shared/data-feed.ts';
import { batchLoss, hitCounts } from './loss.ts';
import { batchInput } from './normalize-batch.ts';

export class EvalError extends Error {
  override readonly name = 'EvalError';
  constructor(
    readonly what: string,
    reason: string,
  ) {
    super(`${what}: ${reason}`);
  }
}

/** A batch as the ring loader delivers it: with the samples' shard keys. */
type MaybeKeyed = Batch & { keys?: readonly string[] };

export interface Predictions {
  samples: number;
  /** Mean cross-entropy (no smoothing). */
  loss: number;
  /** Percentages. */
  top1: number;
  top5: number;
  labels: Int32Array;
  /** Each sample's top-1 class. */
  pred: Int32Array;
  /** Shard keys in sample order, when every batch carried them; else null. */
  keys: string[] | null;
  seconds: number;
}

class Collector {
  labels: number[] = [];
  keys: string[] | null = [];

  add(b: MaybeKeyed): void {
    for (let i = 0; i < b.n; i++) this.labels.push(b.labels[i]!);
    if (this.keys && b.keys && b.keys.length === b.n) this.keys.push(...b.keys);
    else this.keys = null;
  }
}

/** One pass over `feed.epoch(epoch)`: loss, hits and each sample's top-1 class. */
export async function predict(model: Mlp, feed: DataFeed, epoch = 0): Promise<Predictions> {
  const t0 = performance.now();
  const d = model.inputDim;
  const col = new Collector();
  const pred: number[] = [];
  let lossSum = 0;
  let h1 = 0;
  let h5 = 0;
  for await (const batch of feed.epoch(epoch) as AsyncIterable<MaybeKeyed>) {
    const [stats, arg] = tf.tidy(() => {
      const x = batchInput(batch, d);
      const y = tf.tensor1d(batch.labels, 'int32');
      const logits = model.forward(x);
      const h = hitCounts(logits, y);
      return [tf.stack([tf.mul(batchLoss(logits, y, 0), batch.n), h.top1, h.top5]), tf.argMax(logits, 1)];
    });
    col.add(batch);
    // Every tensor that could alias the batch's memory is gone with the tidy.
    batch.release();
    const [s, a] = await Promise.all([stats.data(), arg.data()]);
    tf.dispose([stats, arg]);
    lossSum += s[0]!;
    h1 += s[1]!;
    h5 += s[2]!;
    for (const v of a) pred.push(v);
  }
  const n = col.labels.length;
  return {
    samples: n,
    loss: n ? lossSum / n : NaN,
    top1: n ? (100 * h1) / n : NaN,
    top5: n ? (100 * h5) / n : NaN,
    labels: Int32Array.from(col.labels),
    pred: Int32Array.from(pred),
    keys: col.keys,
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * Predictions from the probabilities averaged over `views` crops: `loss` is the mean of
 * -log(averaged probability of the label), floored at 1e-30; `pred` the top-1 of the average.
 */
export interface TtaResult extends Predictions {
  views: number;
  /** samples x classes, row-major: the softmax probabilities averaged over the views. */
  probs: Float32Array;
}

/** Host memory the averaged probabilities may take (numSamples x classes float32). */
const MAX_TTA_BYTES = 4 * 2 ** 30;

/**
 * Test-time augmentation: view v is `feed.epoch(v)` (an eval-order feed with random-crop
 * transforms gives every image in the same position each epoch, cropped differently); the
 * softmax probabilities of views 0..views-1 are averaged per sample.
 */
export async function predictTta(model: Mlp, feed: DataFeed, views: number, onView?: (v: number) => void): Promise<TtaResult> {
  if (!Number.isInteger(views) || views < 1) throw new RangeError(`predictTta: views must be a positive integer, got ${views}`);
  const t0 = performance.now();
  const C = model.config.numClasses;
  const d = model.inputDim;
  const expected = feed.info.numSamples;
  if (expected * C * 4 > MAX_TTA_BYTES) {
    throw new EvalError(
      '--tta',
      `${expected} samples x ${C} classes of averaged probabilities need ${((expected * C * 4) / 2 ** 30).toFixed(1)} GiB; evaluate a subset`,
    );
  }
  const sum = new Float32Array(expected * C);
  let first: Collector | null = null;
  for (let v = 0; v < views; v++) {
    const col = new Collector();
    let offset = 0;
    for await (const batch of feed.epoch(v) as AsyncIterable<MaybeKeyed>) {
      if (offset + batch.n > expected) throw new EvalError('test-time augmentation', `view ${v} yielded more than the feed's ${expected} samples`);
      const probs = tf.tidy(() => tf.softmax(model.forward(batchInput(batch, d))));
      col.add(batch);
      batch.release();
      const p = (await probs.data()) as Float32Array;
      probs.dispose();
      const base = offset * C;
      for (let i = 0; i < p.length; i++) sum[base + i] = sum[base + i]! + p[i]!;
      offset += batch.n;
    }
    if (offset !== expected) throw new EvalError('test-time augmentation', `view ${v} yielded ${offset} samples, the feed has ${expected}`);
    if (first === null) {
      first = col;
    } else {
      // Every view must list the same images in the same order, or the average mixes images.
      for (let i = 0; i < expected; i++) {
        if (col.labels[i] !== first.labels[i] || (first.keys && col.keys && col.keys[i] !== first.keys[i])) {
          throw new EvalError('test-time augmentation', `view ${v} has a different sample at position ${i}: the feed must be in eval (sequential) order`);
        }
      }
      if (first.keys && !col.keys) first.keys = null;
    }
    onView?.(v);
  }
  const probs = sum;
  for (let i = 0; i < probs.length; i++) probs[i] = probs[i]! / views;
  const labels = Int32Array.from(first!.labels);
  const scored = scoreProbabilities(probs, C, labels);
  return { views, samples: expected, ...scored, labels, keys: first!.keys, probs, seconds: (performance.now() - t0) / 1000 };
}

/**
 * Top-1 / top-5 (percentages), mean NLL and top-1 classes of probability rows. Ties rank the
 * lower class index first (argmax's and sorted top-k's rule).
 */
export function scoreProbabilities(
  probs: Float32Array,
  numClasses: number,
  labels: Int32Array,
): { loss: number; top1: number; top5: number; pred: Int32Array } {
  const n = labels.length;
  if (probs.length !== n * numClasses) throw new RangeError(`scoreProbabilities: ${probs.length} values for ${n} x ${numClasses}`);
  const k = Math.min(5, numClasses);
  const pred = new Int32Array(n);
  let h1 = 0;
  let h5 = 0;
  let nll = 0;
  for (let s = 0; s < n; s++) {
    const row = s * numClasses;
    const y = labels[s]!;
    const py = probs[row + y]!;
    let rank = 0;
    let best = 0;
    for (let c = 0; c < numClasses; c++) {
      const p = probs[row + c]!;
      if (p > py || (p === py && c < y)) rank++;
      if (p > probs[row + best]!) best = c;
    }
    pred[s] = best;
    if (rank === 0) h1++;
    if (rank < k) h5++;
    nll -= Math.log(Math.max(py, 1e-30));
  }
  return { loss: n ? nll / n : NaN, top1: n ? (100 * h1) / n : NaN, top5: n ? (100 * h5) / n : NaN, pred };
}

/** ImageNet ReaL labels: real.json's list, one entry per validation image in sorted file order. */
export type RealLabels = readonly (readonly number[])[];

export function readRealLabels(path: string): number[][] {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new EvalError(path, `cannot read ReaL labels: ${(e as Error).message}`);
  }
  if (!Array.isArray(raw)) throw new EvalError(path, 'ReaL labels must be a JSON list (one list of class indices per validation image)');
  raw.forEach((entry, i) => {
    if (!Array.isArray(entry) || !entry.every((c) => Number.isInteger(c) && c >= 0)) {
      throw new EvalError(path, `entry ${i} is not a list of class indices: ${JSON.stringify(entry)}`);
    }
  });
  return raw as number[][];
}

export interface RealScore {
  /** Percentage of the scored images whose top-1 prediction is one of their ReaL labels. */
  top1: number;
  right: number;
  wrong: number;
  /** Images whose ReaL list is empty: not scored (the official protocol). */
  leftOut: number;
  scored: number;
}

/** The position a shard key stands for: our keys are 9-digit positions in the sharded order. */
export function keyPosition(key: string): number {
  if (!/^\d+$/.test(key)) throw new EvalError('--real', `sample key ${JSON.stringify(key)} is not a position (expected digits, as our shard keys are)`);
  return Number(key);
}

/**
 * Sample i (key K = position in sorted file order) is right if pred[i] is in real[K]; samples
 * with an empty real[K] are left out.
 */
export function scoreReal(real: RealLabels, keys: readonly string[], pred: Int32Array): RealScore {
  if (keys.length !== pred.length) throw new RangeError(`scoreReal: ${keys.length} keys for ${pred.length} predictions`);
  let right = 0;
  let wrong = 0;
  let leftOut = 0;
  for (let i = 0; i < keys.length; i++) {
    const k = keyPosition(keys[i]!);
    const labels = real[k];
    if (labels === undefined) {
      throw new EvalError(
        '--real',
        `sample key ${keys[i]} is position ${k}, but the ReaL file has ${real.length} entries (was the data sharded with --no-shuffle from the full validation set?)`,
      );
    }
    if (labels.length === 0) leftOut++;
    else if (labels.includes(pred[i]!)) right++;
    else wrong++;
  }
  const scored = right + wrong;
  return { top1: scored ? (100 * right) / scored : NaN, right, wrong, leftOut, scored };
}
