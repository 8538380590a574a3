// What the training loop needs to know, and nothing a command line adds (data paths, worker
// counts, --quiet, --dry-run, the backend: those belong to src/cli). The defaults are the paper's
// ImageNet-21k pre-training recipe (Bachmann et al. 2023: batch 16384, Lion, lr 5e-5 from
// scratch, weight decay 1e-3, label smoothing 0.3, MixUp alpha 0.8, constant lr, no warm-up,
// up to 800 epochs).
import type { MixupPartner } from './mixup.ts';
import type { OptimizerName } from './optim/index.ts';
import type { ScheduleName } from './schedule.ts';

export interface TrainConfig {
  arch: string;
  epochs: number;
  /** Images per optimizer update; each of the `accum` micro-batches holds batchSize / accum. */
  batchSize: number;
  accum: number;
  optimizer: OptimizerName;
  lr: number;
  weightDecay: number;
  smoothing: number;
  /** MixUp alpha; 0 turns MixUp off. */
  mixup: number;
  mixupPartner: MixupPartner;
  augment: boolean;
  out: string;
  resume?: string;
  /** Model input; taken from the data (and checked against it when given). */
  res?: number;
  channels?: number;
  numClasses?: number;
  /** Optimizer updates of linear warm-up. */
  warmup: number;
  schedule: ScheduleName;
  /** Max global gradient norm; 0 = no clipping. */
  clip: number;
  /** Checkpoint every N optimizer updates (0 = only at epoch ends). */
  checkpointEvery: number;
  seed: number;
  evalBatchSize: number;
  /** Stop (with a checkpoint) after this many optimizer updates in total. */
  maxSteps?: number;
  /** SGD momentum. */
  momentum: number;
  /**
   * Stop with an error once a feed has replaced more than this many undecodable samples (a
   * damaged dataset, not an odd bad image). Undefined: no limit.
   */
  maxCorrupt?: number;
  /** Fine-tune a pre-trained model instead of training from scratch (the finetune command). */
  finetune?: FinetuneSpec;
  /** Provenance recorded in the model's config.json: the training data and the command line. */
  dataset?: string;
  command?: string;
}

export type FinetuneMode = 'linear' | 'full';
export const FINETUNE_MODES: readonly FinetuneMode[] = ['linear', 'full'];

export interface FinetuneSpec {
  /** The pre-trained model: a model dir, a run's --out, a checkpoint dir, or a .safetensors file. */
  checkpoint: string;
  /** linear: only the new head trains (the body frozen); full: everything trains. */
  mode: FinetuneMode;
  /** full: the body's learning rate as a multiple of the head's. */
  bodyLrMult: number;
}

/** The recipe values a command's defaults can change (train's are DEFAULTS, finetune's its own). */
export interface RecipeDefaults {
  arch: string;
  epochs: number;
  batchSize: number;
  accum: number;
  optimizer: OptimizerName;
  lr: number;
  weightDecay: number;
  momentum: number;
  smoothing: number;
  mixup: number;
  mixupPartner: MixupPartner;
  warmup: number;
  schedule: ScheduleName;
  clip: number;
  checkpointEvery: number;
  seed: number;
}

export const DEFAULTS = {
  arch: 'B_12-Wi_1024',
  epochs: 800,
  batchSize: 16384,
  accum: 1,
  optimizer: 'lion',
  lr: 5e-5,
  weightDecay: 1e-3,
  smoothing: 0.3,
  mixup: 0.8,
  mixupPartner: 'reverse',
  augment: true,
  warmup: 0,
  schedule: 'none',
  clip: 0,
  checkpointEvery: 500,
  seed: 0,
  momentum: 0.9,
} as const satisfies RecipeDefaults & Record<string, unknown>;

/** A configuration as a library caller would give it: the recipe's defaults, then `partial` on top. */
export function trainConfig(partial: Partial<TrainConfig> & { out: string }): TrainConfig {
  const batchSize = partial.batchSize ?? DEFAULTS.batchSize;
  return { ...DEFAULTS, evalBatchSize: batchSize, ...partial };
}

/** Images per batch the training feed must deliver. */
export function microBatchSize(o: Pick<TrainConfig, 'batchSize' | 'accum'>): number {
  return o.batchSize / o.accum;
}

/** MixUp is part of augmentation in the reference: --no-augment turns it off too. */
export function mixupAlpha(o: Pick<TrainConfig, 'mixup' | 'augment'>): number {
  return o.augment ? o.mixup : 0;
}
