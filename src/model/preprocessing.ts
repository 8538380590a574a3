// What a model expects of its inputs, kept with its weights: the per-channel normalisation it was
// trained with (0-255 units: x = (pixel - mean) / std), the eval crop, its class names, and where
// it came from. Training fixes it at the start and every later use (validation, eval, TTA, ReaL,
// fine-tuning's starting point, PyTorch) reads it from the model instead of recomputing it from
// whatever data it is shown.

/** ImageNet's statistics in 0-255 units, as the paper normalises (torchvision's x 255). */
export const IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255];
export const IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255];

export type NormalizeSource = 'dataset' | 'imagenet' | 'explicit';

export interface Normalization {
  /** Per channel, 0-255 units. */
  mean: number[];
  std: number[];
  /** Where the values came from: the training index's statistics, ImageNet's, or given by hand. */
  source: NormalizeSource;
}

/** The evaluation transform: the centred square of the shorter side (times `fraction`), resized to res. */
export interface EvalCrop {
  kind: 'center';
  fraction: number;
}

export const DEFAULT_EVAL_CROP: EvalCrop = { kind: 'center', fraction: 1 };

export interface Preprocessing {
  normalization: Normalization;
  evalCrop: EvalCrop;
}

/** How a model came to be, for whoever loads it later. */
export interface Provenance {
  /** The training data (index) of the run that wrote it. */
  dataset?: string;
  command?: string;
  updates?: number;
  samplesSeen?: number;
  /** Training compute as the paper counts it (3 x forward FLOPs x samples). */
  computeFlops?: number;
  /** Fine-tuned from this model's weights. */
  finetunedFrom?: string;
  /** Converted by npm run import from this file. */
  importedFrom?: string;
}

export class PreprocessingError extends Error {
  override readonly name = 'PreprocessingError';
}

/** ImageNet's statistics for 3 channels; their mean for gray images. */
export function imagenetNormalization(channels: number): Normalization {
  if (channels === 3) return { mean: [...IMAGENET_MEAN], std: [...IMAGENET_STD], source: 'imagenet' };
  const avg = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
  return { mean: new Array(channels).fill(avg(IMAGENET_MEAN)), std: new Array(channels).fill(avg(IMAGENET_STD)), source: 'imagenet' };
}

/** Checks a normalisation against the model's channels: one finite mean and one positive std each. */
export function checkNormalization(n: Normalization, channels: number, where: string): Normalization {
  const ok = (v: unknown): v is number[] => Array.isArray(v) && v.length === channels && v.every((x) => typeof x === 'number' && Number.isFinite(x));
  if (!ok(n.mean)) throw new PreprocessingError(`${where}: mean must be ${channels} finite numbers (0-255 units), got ${JSON.stringify(n.mean)}`);
  if (!ok(n.std) || n.std.some((s) => s <= 0))
    throw new PreprocessingError(`${where}: std must be ${channels} positive numbers (0-255 units), got ${JSON.stringify(n.std)}`);
  return n;
}
