// AdamW with torch.optim.AdamW's arithmetic: p *= 1 - lr*wd; m, v moving averages;
// p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
import * as tf from '@tensorflow/tfjs';
import { adamwFused, simdKernelsActive } from '../../model/simd/simd-kernels.ts';
import { adamMoments, decayed, SlotOptimizer } from './base.ts';
import { fusedUpdatesActive } from './fused.ts';
import type { NamedParam, OptimizerHyper } from './types.ts';

export class AdamW extends SlotOptimizer {
  readonly name = 'adamw' as const;
  private readonly b1: number;
  private readonly b2: number;
  private readonly eps: number;

  constructor(
    params: readonly NamedParam[],
    private readonly hyper: OptimizerHyper,
  ) {
    super(params, ['exp_avg', 'exp_avg_sq']);
    [this.b1, this.b2] = hyper.betas ?? [0.9, 0.999];
    this.eps = hyper.eps ?? 1e-8;
  }

  protected update(i: number, p: tf.Variable, g: tf.Tensor, lr: number, step: number): void {
    const m = this.slot('exp_avg', i);
    const v = this.slot('exp_avg_sq', i);
    if (fusedUpdatesActive() && simdKernelsActive()) {
      // One SIMD pass with the same float32 operations as below (model/simd/kernels.c).
      const [p1, m1, v1] = adamwFused(p, m, v, g, { b1: this.b1, b2: this.b2, eps: this.eps, lr, wd: this.hyper.weightDecay, step });
      p.assign(p1);
      m.assign(m1);
      v.assign(v1);
      return;
    }
    const { m1, v1, denom, bc1 } = adamMoments(m, v, g, this.b1, this.b2, this.eps, step);
    p.assign(tf.sub(decayed(p, lr, this.hyper.weightDecay), tf.mul(tf.div(m1, denom), lr / bc1)));
    m.assign(m1);
    v.assign(v1);
  }
}
