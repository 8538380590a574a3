// Targets and metrics. Label smoothing (PyTorch's CrossEntropyLoss(label_smoothing=e)) and MixUp
// (l*CE(y) + (1-l)*CE(y_other)) are both linear in the target distribution, so each batch gets
// one soft target row per sample, t = l*smooth(y) + (1-l)*smooth(y_other) with
// smooth(y) = (1-e)*onehot(y) + e/C, and the loss is the cross-entropy against t.
import * as tf from '@tensorflow/tfjs';
import { softCrossEntropy } from '../model/ops.ts';

export interface MixSpec {
  lambda: number;
  /** Label of each sample's partner. */
  partnerLabels: tf.Tensor1D;
}

export function softTargets(labels: tf.Tensor1D, numClasses: number, smoothing: number, mix?: MixSpec): tf.Tensor2D {
  return tf.tidy(() => {
    const smooth = (y: tf.Tensor1D): tf.Tensor2D => {
      const hot = tf.cast(tf.oneHot(y, numClasses), 'float32') as tf.Tensor2D;
      return smoothing === 0 ? hot : (tf.add(tf.mul(hot, 1 - smoothing), smoothing / numClasses) as tf.Tensor2D);
    };
    const t = smooth(labels);
    if (!mix || mix.lambda === 1) return t;
    return tf.add(tf.mul(t, mix.lambda), tf.mul(smooth(mix.partnerLabels), 1 - mix.lambda)) as tf.Tensor2D;
  });
}

/** Mean loss of a batch: cross-entropy of logits against smoothed (and mixed) labels. */
export function batchLoss(logits: tf.Tensor2D, labels: tf.Tensor1D, smoothing: number, mix?: MixSpec): tf.Scalar {
  return tf.tidy(() => softCrossEntropy(logits, softTargets(labels, logits.shape[1], smoothing, mix)));
}

/** Samples whose label is the top-1 / among the top-5 logits (k capped at the class count). */
export function topKHits(logits: tf.Tensor2D, labels: tf.Tensor1D): { top1: tf.Tensor1D; top5: tf.Tensor1D } {
  return tf.tidy(() => {
    const k = Math.min(5, logits.shape[1]);
    const { indices } = tf.topk(logits, k);
    const eq = tf.cast(tf.equal(indices, tf.expandDims(labels, 1)), 'float32');
    const top1 = tf.squeeze(tf.slice(eq, [0, 0], [-1, 1]), [1]) as tf.Tensor1D;
    const top5 = tf.sum(eq, 1) as tf.Tensor1D;
    return { top1, top5 };
  });
}

/**
 * Hit counts for a batch as scalars; with MixUp a prediction counts if it matches either label
 * (the reference's topk_acc takes the max of the two accuracies; per-sample OR is the same idea
 * without its batch-level max).
 */
export function hitCounts(logits: tf.Tensor2D, labels: tf.Tensor1D, partnerLabels?: tf.Tensor1D): { top1: tf.Scalar; top5: tf.Scalar } {
  return tf.tidy(() => {
    const a = topKHits(logits, labels);
    if (!partnerLabels) return { top1: tf.sum(a.top1), top5: tf.sum(a.top5) };
    const b = topKHits(logits, partnerLabels);
    return { top1: tf.sum(tf.maximum(a.top1, b.top1)), top5: tf.sum(tf.maximum(a.top5, b.top5)) };
  });
}
