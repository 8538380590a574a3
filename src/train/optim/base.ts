// Shared machinery: per-parameter slot variables (zeros at start, like PyTorch's lazily created
// state), checkpoint naming, and the apply loop that keeps every update inside tf.tidy.
import * as tf from '@tensorflow/tfjs';
import type { NamedParam, Optimizer, OptimizerName } from './types.ts';

export class OptimizerStateError extends Error {
  override readonly name = 'OptimizerStateError';
  constructor(
    readonly optimizer: string,
    readonly key: string,
    reason: string,
  ) {
    super(`${optimizer} state ${key}: ${reason}`);
  }
}

export abstract class SlotOptimizer implements Optimizer {
  abstract readonly name: OptimizerName;
  protected readonly slots: Map<string, tf.Variable[]> = new Map();
  private count = 0;

  constructor(
    protected readonly params: readonly NamedParam[],
    slotNames: readonly string[],
  ) {
    for (const slot of slotNames) {
      this.slots.set(
        slot,
        params.map((p) => tf.tidy(() => tf.variable(tf.zerosLike(p.variable), false))),
      );
    }
  }

  get steps(): number {
    return this.count;
  }

  /** One parameter's update. Runs inside tf.tidy; assign new values to `param` and slot variables. */
  protected abstract update(i: number, param: tf.Variable, grad: tf.Tensor, lr: number, step: number): void;

  apply(grads: readonly tf.Tensor[], lr: number): void {
    if (grads.length !== this.params.length) {
      throw new RangeError(`${this.name}: got ${grads.length} gradients for ${this.params.length} parameters`);
    }
    this.count++;
    for (let i = 0; i < this.params.length; i++) {
      const p = this.params[i]!;
      const groupLr = p.lrScale === undefined ? lr : lr * p.lrScale;
      tf.tidy(() => this.update(i, p.variable, grads[i]!, groupLr, this.count));
    }
  }

  protected slot(name: string, i: number): tf.Variable {
    return this.slots.get(name)![i]!;
  }

  state(): Map<string, tf.Tensor> {
    const out = new Map<string, tf.Tensor>();
    for (const [slot, vars] of this.slots) vars.forEach((v, i) => out.set(`${slot}.${this.params[i]!.name}`, v));
    return out;
  }

  load(state: ReadonlyMap<string, { shape: number[]; data: Float32Array }>, steps: number): void {
    const expected = this.state();
    for (const [key, v] of expected) {
      const t = state.get(key);
      if (!t) throw new OptimizerStateError(this.name, key, 'missing from the checkpoint');
      if (t.data.length !== v.size || t.shape.length !== v.shape.length || t.shape.some((d, j) => d !== v.shape[j])) {
        throw new OptimizerStateError(this.name, key, `shape [${t.shape}] does not match [${v.shape}]`);
      }
    }
    for (const [key, v] of expected) {
      const t = state.get(key)!;
      tf.tidy(() => (v as tf.Variable).assign(tf.tensor(t.data.slice(), v.shape, 'float32')));
    }
    this.count = steps;
  }

  dispose(): void {
    for (const vars of this.slots.values()) for (const v of vars) v.dispose();
    this.slots.clear();
  }
}

/** p * (1 - lr * wd): decoupled weight decay (AdamW, Lion), skipped when it is a no-op. */
export function decayed(p: tf.Tensor, lr: number, wd: number): tf.Tensor {
  return wd === 0 || lr === 0 ? p : tf.mul(p, 1 - lr * wd);
}

/**
 * Adam's moment updates and its bias-corrected denominator, shared by AdamW and LAMB:
 * m1 = b1*m + (1-b1)*g, v1 = b2*v + (1-b2)*g^2, denom = sqrt(v1)/sqrt(1-b2^t) + eps.
 */
export function adamMoments(
  m: tf.Tensor,
  v: tf.Tensor,
  g: tf.Tensor,
  b1: number,
  b2: number,
  eps: number,
  step: number,
): { m1: tf.Tensor; v1: tf.Tensor; denom: tf.Tensor; bc1: number } {
  const m1 = tf.add(tf.mul(m, b1), tf.mul(g, 1 - b1));
  const v1 = tf.add(tf.mul(v, b2), tf.mul(tf.square(g), 1 - b2));
  const denom = tf.add(tf.div(tf.sqrt(v1), Math.sqrt(1 - Math.pow(b2, step))), eps);
  return { m1, v1, denom, bc1: 1 - Math.pow(b1, step) };
}
