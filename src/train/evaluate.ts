// Evaluation pass: mean cross-entropy (no smoothing) and top-1 / top-5 accuracy over a feed.
import * as tf from '@tensorflow/tfjs';
import type { Mlp } from '../model/mlp.ts';
import type { DataFeed } from '../shared/data-feed.ts';
import { batchLoss, hitCounts } from './loss.ts';
import { batchInput } from './normalize-batch.ts';

export interface EvalResult {
  loss: number;
  top1: number;
  top5: number;
  samples: number;
  seconds: number;
}

export async function evaluate(model: Mlp, feed: DataFeed): Promise<EvalResult> {
  const t0 = performance.now();
  let lossSum = 0;
  let top1 = 0;
  let top5 = 0;
  let samples = 0;
  const d = model.inputDim;
  for await (const batch of feed.epoch(0)) {
    const out = tf.tidy(() => {
      const x = batchInput(batch, d);
      const y = tf.tensor1d(batch.labels, 'int32');
      const logits = model.forward(x);
      const h = hitCounts(logits, y);
      return tf.stack([tf.mul(batchLoss(logits, y, 0), batch.n), h.top1, h.top5]);
    });
    // Every tensor that could alias the batch's memory (cpu, tfjs-node) is gone with the tidy.
    batch.release();
    const [l, a, b] = (await out.data()) as Float32Array;
    out.dispose();
    lossSum += l!;
    top1 += a!;
    top5 += b!;
    samples += batch.n;
  }
  return {
    loss: samples ? lossSum / samples : NaN,
    top1: samples ? (100 * top1) / samples : NaN,
    top5: samples ? (100 * top5) / samples : NaN,
    samples,
    seconds: (performance.now() - t0) / 1000,
  };
}
