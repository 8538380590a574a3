// Shared machinery: per-parameter slot variables (zeros at start, like PyTorch's lazily created
// state), checkpoint naming, and the apply loop that keeps every update inside tf.tidy.
import * as tf from '@tensorflow/tfjs';
import type { NamedParam, Optimizer, OptimizerName } from './types.ts';

export class OptimizerStateError extends Error {
  override readonly name = 'OptimizerStateError';
  constructor(readonly optimizer: string, readonly key: string, reason: string) {
    super(`${optimizer} state ${key}: ${reason}`);
  }
}

export abstract class SlotOptimizer implements Optimizer {
  abstract readonly name: OptimizerName;
  protected readonly slots: Map<string, tf.Variable[]> = new Map();
  private count = 0;

  constructor(protected readonly params: readonly NamedParam[], slotNames: readonly string[]) {
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
