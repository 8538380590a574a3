// What every optimizer looks like to the trainer: one update from gradients at a given learning
// rate, and its state as named tensors (for checkpoints) plus a step counter.
import type * as tf from '@tensorflow/tfjs';

export type OptimizerName = 'lion' | 'lamb' | 'adamw' | 'sgd';
export const OPTIMIZER_NAMES: readonly OptimizerName[] = ['lion', 'lamb', 'adamw', 'sgd'];

/** State tensors per parameter (for memory estimates). */
export const OPTIMIZER_SLOTS: Record<OptimizerName, number> = { lion: 1, lamb: 2, adamw: 2, sgd: 1 };

export interface NamedParam {
  /** State-dict key of the parameter; optimizer state is stored under "<slot>.<name>". */
  name: string;
  variable: tf.Variable;
  /**
   * The parameter group's learning-rate multiplier (default 1): the update uses lr * lrScale,
   * as a PyTorch parameter group whose lr is lrScale times the base (decoupled weight decay
   * scales with it, as PyTorch's does with the group's lr). The schedule scales every group.
   */
  lrScale?: number;
}

export interface OptimizerHyper {
  weightDecay: number;
  /** Lion (0.9, 0.99), AdamW (0.9, 0.999), LAMB (0.9, 0.999) unless given. */
  betas?: [number, number];
  /** AdamW 1e-8, LAMB 1e-6 unless given. */
  eps?: number;
  /** SGD momentum (0.9 as in the reference's MomentumSGD). */
  momentum?: number;
  nesterov?: boolean;
}

export interface Optimizer {
  readonly name: OptimizerName;
  /** Number of updates applied so far (drives Adam-style bias correction). */
  readonly steps: number;
  /**
   * Applies one update at base rate `lr` (times each parameter's lrScale); `grads[i]` belongs
   * to `params[i]` of the constructor. Does not dispose grads.
   */
  apply(grads: readonly tf.Tensor[], lr: number): void;
  /** State tensors under stable names, for checkpoints (views: do not dispose). */
  state(): Map<string, tf.Tensor>;
  /** Restores state written by state() and the update count. */
  load(state: ReadonlyMap<string, { shape: number[]; data: Float32Array }>, steps: number): void;
  dispose(): void;
}
