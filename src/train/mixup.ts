// MixUp on the device: one lambda ~ Beta(a, a) per batch, each sample mixed with a partner from
// the same batch - the batch reversed, or a seeded permutation. Lambda and the permutation come
// from the trainer's Rng, whose state is checkpointed, so a resumed run mixes identically.
import * as tf from '@tensorflow/tfjs';
import type { Rng } from '../shared/random.ts';

export type MixupPartner = 'reverse' | 'permute';
export const MIXUP_PARTNERS: readonly MixupPartner[] = ['reverse', 'permute'];

export interface MixDraw {
  lambda: number;
  /** partner[i] is the sample mixed into sample i. */
  partner: Int32Array;
}

export function drawMix(rng: Rng, alpha: number, n: number, partner: MixupPartner): MixDraw {
  const lambda = rng.beta(alpha, alpha);
  if (partner === 'permute') return { lambda, partner: rng.permutation(n) };
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = n - 1 - i;
  return { lambda, partner: p };
}

/** lambda * x + (1 - lambda) * x[partner], plus the partners' labels. */
export function applyMix(images: tf.Tensor2D, labels: tf.Tensor1D, draw: MixDraw): { images: tf.Tensor2D; partnerLabels: tf.Tensor1D } {
  return tf.tidy(() => {
    const idx = tf.tensor1d(draw.partner, 'int32');
    const mixed = tf.add(tf.mul(images, draw.lambda), tf.mul(tf.gather(images, idx), 1 - draw.lambda)) as tf.Tensor2D;
    return { images: mixed, partnerLabels: tf.gather(labels, idx) as tf.Tensor1D };
  });
}
