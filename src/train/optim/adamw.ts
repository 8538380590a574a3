// AdamW with torch.optim.AdamW's arithmetic: p *= 1 - lr*wd; m, v moving averages;
// p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
import * as tf from '@tensorflow/tfjs';
import { adamMoments, decayed, SlotOptimizer } from './base.ts';
import type { NamedParam, OptimizerHyper } from './types.ts';

export class AdamW extends SlotOptimizer {
  readonly name = 'adamw' as const;
  private readonly b1: number;
  private readonly b2: number;
  private readonly eps: number;

  constructor(params: readonly NamedParam[], private readonly hyper: OptimizerHyper) {
    super(params, ['exp_avg', 'exp_avg_sq']);
    [this.b1, this.b2] = hyper.betas ?? [0.9, 0.999];
    this.eps = hyper.eps ?? 1e-8;
  }

  protected update(i: number, p: tf.Variable, g: tf.Tensor, lr: number, step: number): void {
    const m = this.slot('exp_avg', i);
    const v = this.slot('exp_avg_sq', i);
    const { m1, v1, denom, bc1 } = adamMoments(m, v, g, this.b1, this.b2, this.eps, step);
    p.assign(tf.sub(decayed(p, lr, this.hyper.weightDecay), tf.mul(tf.div(m1, denom), lr / bc1)));
    m.assign(m1);
    v.assign(v1);
  }
}
