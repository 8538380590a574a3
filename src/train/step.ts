// One training micro-batch (forward + backward) and the gradient accumulator that turns
// micro-batches into one optimizer update.
import * as tf from '@tensorflow/tfjs';
import type { Mlp } from '../model/mlp.ts';
import { clipByGlobalNorm } from './clip.ts';
import { batchLoss, hitCounts } from './loss.ts';
import { applyMix, type MixDraw } from './mixup.ts';
import type { Optimizer } from './optim/index.ts';

export interface MicroResult {
  loss: tf.Scalar;
  top1: tf.Scalar;
  top5: tf.Scalar;
  /** One per differentiated variable, in the order of MicroOptions.vars (default model.params). */
  grads: tf.Tensor[];
}

export interface MicroOptions {
  /**
   * The variables to differentiate, in the order the optimizer holds them (default: all of the
   * model's, in model.params order).
   */
  vars?: tf.Variable[];
  /**
   * Linear probing: the body runs forward outside the gradient tape (no activations kept, no
   * backward pass through it) and only the head is differentiated; `vars` must be head variables.
   */
  frozenBody?: boolean;
}

/** Loss, hit counts and gradients of one batch; MixUp (if drawn) is applied on the device. */
export function microStep(model: Mlp, images: tf.Tensor2D, labels: tf.Tensor1D, smoothing: number, mix?: MixDraw, opts: MicroOptions = {}): MicroResult {
  return tf.tidy(() => {
    let x = images;
    let partnerLabels: tf.Tensor1D | undefined;
    if (mix) ({ images: x, partnerLabels } = applyMix(images, labels, mix));
    const vars = opts.vars ?? model.variables();
    // Outside variableGrads nothing is recorded for the backward pass.
    const features = opts.frozenBody ? model.features(x) : null;
    let logits: tf.Tensor2D | null = null;
    const { value, grads } = tf.variableGrads(() => {
      const z = features ? model.head(features, { inputGrad: false }) : model.forward(x);
      logits = tf.keep(z);
      return batchLoss(z, labels, smoothing, partnerLabels && mix ? { lambda: mix.lambda, partnerLabels } : undefined);
    }, vars);
    const hits = hitCounts(logits!, labels, partnerLabels);
    // tf.keep let the logits out of variableGrads' scopes; this tidy would not free them.
    tf.dispose(logits!);
    return {
      loss: value,
      top1: hits.top1,
      top5: hits.top5,
      grads: vars.map((v) => {
        const g = grads[v.name];
        if (!g) throw new Error(`microStep: no gradient for ${v.name} (frozen or not used by the forward pass)`);
        return g;
      }),
    };
  });
}

/** Sums gradients of the micro-batches of one update; owns the tensors it holds. */
export class GradAccumulator {
  private sum: tf.Tensor[] | null = null;
  private n = 0;

  get count(): number {
    return this.n;
  }

  /** Takes ownership of `grads`. */
  add(grads: tf.Tensor[]): void {
    if (this.sum === null) {
      this.sum = grads;
    } else {
      const prev = this.sum;
      this.sum = prev.map((s, i) => tf.add(s, grads[i]!));
      tf.dispose(prev);
      tf.dispose(grads);
    }
    this.n++;
  }

  /** Mean gradient over the micro-batches (caller owns it); resets the accumulator. */
  take(): tf.Tensor[] {
    if (this.sum === null) throw new Error('GradAccumulator.take: nothing accumulated');
    const sum = this.sum;
    const n = this.n;
    this.sum = null;
    this.n = 0;
    if (n === 1) return sum;
    const mean = tf.tidy(() => sum.map((g) => tf.div(g, n)));
    tf.dispose(sum);
    return mean;
  }

  dispose(): void {
    if (this.sum) tf.dispose(this.sum);
    this.sum = null;
    this.n = 0;
  }
}

/** Clips (if asked), applies the update, frees the gradients; returns the pre-clip norm if clipped. */
export function applyUpdate(optimizer: Optimizer, grads: tf.Tensor[], lr: number, clip: number): tf.Scalar | null {
  let norm: tf.Scalar | null = null;
  let used = grads;
  if (clip > 0) {
    const c = clipByGlobalNorm(grads, clip);
    used = c.grads;
    norm = c.norm;
    tf.dispose(grads);
  }
  optimizer.apply(used, lr);
  tf.dispose(used);
  return norm;
}
