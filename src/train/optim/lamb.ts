// LAMB (You et al. 2020) as timm's Lamb with always_adapt=True and no built-in clipping (use
// --clip): Adam direction with bias correction, plus coupled decay wd*p inside the update, scaled
// per tensor by the trust ratio ||p|| / ||update|| (1 when either norm is 0).
import * as tf from '@tensorflow/tfjs';
import { adamMoments, SlotOptimizer } from './base.ts';
import type { NamedParam, OptimizerHyper } from './types.ts';

export class Lamb extends SlotOptimizer {
  readonly name = 'lamb' as const;
  private readonly b1: number;
  private readonly b2: number;
  private readonly eps: number;

  constructor(
    params: readonly NamedParam[],
    private readonly hyper: OptimizerHyper,
  ) {
    super(params, ['exp_avg', 'exp_avg_sq']);
    [this.b1, this.b2] = hyper.betas ?? [0.9, 0.999];
    this.eps = hyper.eps ?? 1e-6;
  }

  protected update(i: number, p: tf.Variable, g: tf.Tensor, lr: number, step: number): void {
    const m = this.slot('exp_avg', i);
    const v = this.slot('exp_avg_sq', i);
    const { m1, v1, denom, bc1 } = adamMoments(m, v, g, this.b1, this.b2, this.eps, step);
    let u = tf.div(tf.div(m1, bc1), denom);
    if (this.hyper.weightDecay !== 0) u = tf.add(u, tf.mul(p, this.hyper.weightDecay));
    const wNorm = tf.norm(p);
    const uNorm = tf.norm(u);
    const trust = tf.where(tf.logicalAnd(tf.greater(wNorm, 0), tf.greater(uNorm, 0)), tf.div(wNorm, uNorm), tf.onesLike(wNorm));
    p.assign(tf.sub(p, tf.mul(u, tf.mul(trust, lr))));
    m.assign(m1);
    v.assign(v1);
  }
}
