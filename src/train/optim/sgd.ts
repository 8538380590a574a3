// SGD with momentum, torch.optim.SGD semantics (dampening 0): coupled weight decay g += wd*p;
// the buffer starts as the first gradient, then buf = mu*buf + g; p -= lr*buf (or, Nesterov,
// p -= lr*(g + mu*buf)).
import * as tf from '@tensorflow/tfjs';
import { SlotOptimizer } from './base.ts';
import type { NamedParam, OptimizerHyper } from './types.ts';

export class Sgd extends SlotOptimizer {
  readonly name = 'sgd' as const;
  private readonly mu: number;

  constructor(
    params: readonly NamedParam[],
    private readonly hyper: OptimizerHyper,
  ) {
    super(params, ['momentum_buffer']);
    this.mu = hyper.momentum ?? 0.9;
  }

  protected update(i: number, p: tf.Variable, grad: tf.Tensor, lr: number, step: number): void {
    const g = this.hyper.weightDecay === 0 ? grad : tf.add(grad, tf.mul(p, this.hyper.weightDecay));
    if (this.mu === 0) {
      p.assign(tf.sub(p, tf.mul(g, lr)));
      return;
    }
    const buf = this.slot('momentum_buffer', i);
    const b1 = step === 1 ? g : tf.add(tf.mul(buf, this.mu), g);
    const direction = this.hyper.nesterov ? tf.add(g, tf.mul(b1, this.mu)) : b1;
    p.assign(tf.sub(p, tf.mul(direction, lr)));
    buf.assign(b1);
  }
}
