// Gradient clipping by global norm with torch.nn.utils.clip_grad_norm_'s arithmetic:
// coef = min(1, max_norm / (total_norm + 1e-6)), every gradient multiplied by coef. All on the
// device; the norm comes back as a scalar tensor for logging.
import * as tf from '@tensorflow/tfjs';

export function globalNorm(grads: readonly tf.Tensor[]): tf.Scalar {
  return tf.tidy(() => tf.sqrt(tf.addN(grads.map((g) => tf.sum(tf.square(g))))) as tf.Scalar);
}

/** New clipped gradients (the inputs are left alone) and the pre-clipping norm. */
export function clipByGlobalNorm(grads: readonly tf.Tensor[], maxNorm: number): { grads: tf.Tensor[]; norm: tf.Scalar } {
  return tf.tidy(() => {
    const norm = globalNorm(grads);
    const coef = tf.minimum(tf.div(maxNorm, tf.add(norm, 1e-6)), 1);
    return { grads: grads.map((g) => tf.mul(g, coef)), norm };
  });
}
