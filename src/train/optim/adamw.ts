// AdamW with torch.optim.AdamW's arithmetic: p *= 1 - lr*wd; m, v moving averages;
// p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
import * as tf from '@tensorflow/tfjs';
import { decayed, SlotOptimizer } from './base.ts';
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
    const bc1 = 1 - Math.pow(this.b1, step);
    const bc2 = 1 - Math.pow(this.b2, step);
    const m1 = tf.add(tf.mul(m, this.b1), tf.mul(g, 1 - this.b1));
    const v1 = tf.add(tf.mul(v, this.b2), tf.mul(tf.square(g), 1 - this.b2));
    const denom = tf.add(tf.div(tf.sqrt(v1), Math.sqrt(bc2)), this.eps);
    p.assign(tf.sub(decayed(p, lr, this.hyper.weightDecay), tf.mul(tf.div(m1, denom), lr / bc1)));
    m.assign(m1);
    v.assign(v1);
  }
}
