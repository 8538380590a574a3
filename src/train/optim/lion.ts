// Lion (Chen et al. 2023), exactly as the reference repository's (gregorbachmann/scaling_mlps) utils/optimizer.py: decoupled weight
// decay first, then p -= lr * sign(b1*m + (1-b1)*g), then m = b2*m + (1-b2)*g.
import * as tf from '@tensorflow/tfjs';
import { decayed, SlotOptimizer } from './base.ts';
import { lionSimd, simdKernelsActive } from '../../model/simd/simd-kernels.ts';
import { fusedUpdatesActive, lionFused } from './fused.ts';
import type { NamedParam, OptimizerHyper } from './types.ts';

export class Lion extends SlotOptimizer {
  readonly name = 'lion' as const;
  private readonly b1: number;
  private readonly b2: number;

  constructor(
    params: readonly NamedParam[],
    private readonly hyper: OptimizerHyper,
  ) {
    super(params, ['exp_avg']);
    [this.b1, this.b2] = hyper.betas ?? [0.9, 0.99];
  }

  protected update(i: number, p: tf.Variable, g: tf.Tensor, lr: number): void {
    const m = this.slot('exp_avg', i);
    if (fusedUpdatesActive()) {
      // WebAssembly SIMD on wasm (~3x faster than the JS pass), the JS pass on cpu.
      const attrs = { lr, wd: this.hyper.weightDecay, b1: this.b1, b2: this.b2 };
      const [np, nm] = simdKernelsActive() ? lionSimd(p, m, g, attrs) : lionFused(p, m, g, attrs);
      p.assign(np!);
      m.assign(nm!);
      return;
    }
    const direction = tf.sign(tf.add(tf.mul(m, this.b1), tf.mul(g, 1 - this.b1)));
    p.assign(tf.sub(decayed(p, lr, this.hyper.weightDecay), tf.mul(direction, lr)));
    m.assign(tf.add(tf.mul(m, this.b2), tf.mul(g, 1 - this.b2)));
  }
}
