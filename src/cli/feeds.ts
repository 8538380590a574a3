// Ring-backed data feeds for the train, finetune and eval commands: thin wrappers over
// Loader.open that fix the order, the transform and the resolution. The loader upscales
// datasets stored smaller than `res`. Here the layers meet: the pipeline's loader implements the
// shared DataFeed contract that the trainer consumes.
import type { AugmentSettings } from '../pipeline/augment/settings.ts';
import { Loader, type LoaderOptions } from '../pipeline/loader/loader.ts';
import type { ShardMemory } from '../pipeline/loader/shard-memory.ts';
import { readModelConfig } from '../model/checkpoint.ts';
import { resolveCheckpoint } from '../train/checkpoint.ts';
import type { DataFeed } from '../shared/data-feed.ts';
import { microBatchSize } from '../train/config.ts';
import { resolveFrameDtype, type FrameDtypeChoice } from '../train/frame-dtype.ts';
import type { TrainFeeds } from '../train/train.ts';
import { inMemoryOption } from './in-memory.ts';
import type { TrainFlags } from './train-flags.ts';

/**
 * Training (`augment`: random resized crops and flips) and validation (centre crop) feeds at
 * `res` (default: the training data's resolution; validation follows the training feed's).
 */
export async function openTrainFeeds(opts: TrainFlags, res: number | undefined, augment: AugmentSettings, log?: (line: string) => void): Promise<TrainFeeds> {
  // After backend selection: 'auto' follows the active backend.
  const common = {
    seed: opts.seed,
    workers: opts.workers,
    verify: opts.verify,
    frameDtype: resolveFrameDtype(opts.frameDtype),
  };
  const say = log ?? (() => {});
  const normalize = trainNormalize(opts);
  const train = await Loader.open({
    data: opts.data!,
    batchSize: microBatchSize(opts),
    mode: 'train',
    noAugment: !opts.augment,
    augment,
    lastEpoch: opts.epochs - 1,
    normalize,
    ...common,
    inMemory: inMemoryOption(opts.inMemory, say),
    ...(res !== undefined ? { res } : {}),
  });
  log?.(train.describe());
  if (!opts.val) return { train };
  try {
    // Validation sees the model's inputs: the training feed's normalisation, not its own data's.
    const n = train.info.normalization!;
    const val = await Loader.open({
      data: opts.val,
      batchSize: opts.evalBatchSize,
      mode: 'eval',
      ...common,
      inMemory: inMemoryOption(opts.inMemory, say),
      normalize: { mean: n.mean, std: n.std },
      res: train.info.res,
    });
    return { train, val };
  } catch (err) {
    await train.close();
    throw err;
  }
}

/**
 * The training feed's normalisation, fixed at the start: a resumed run keeps the one its
 * checkpoint recorded; otherwise --mean/--std, --normalize imagenet, or the training data's own
 * statistics (the default, for fine-tuning too: the new dataset's training split, as the paper).
 */
function trainNormalize(opts: TrainFlags): LoaderOptions['normalize'] {
  if (opts.resume) {
    const dir = resolveCheckpoint(opts.resume);
    const recorded = dir ? readModelConfig(dir).preprocessing?.normalization : undefined;
    if (recorded) return { mean: recorded.mean, std: recorded.std };
  }
  const req = opts.normalize;
  if (req?.kind === 'explicit') return { mean: req.mean, std: req.std };
  return req?.kind === 'imagenet' ? 'imagenet' : 'dataset';
}

export interface EvalFeedOptions {
  data: string;
  /** The model's normalisation (default: the data's own statistics, for models without one). */
  normalize?: LoaderOptions['normalize'];
  verify?: boolean;
  /** --in-memory: the shards held in shared memory (progress through `log`). */
  inMemory?: boolean;
  log?: (line: string) => void;
  batchSize: number;
  res: number;
  workers: number;
  /** Crop seed of the test-time views. */
  seed: number;
  /** null: centre crop (the evaluation transform); else the train transform, view v = epoch v. */
  views: AugmentSettings | null;
  /** Absent or auto: by the active backend. */
  frameDtype?: FrameDtypeChoice;
}

export type OpenEvalFeed = (o: EvalFeedOptions) => Promise<DataFeed>;

// Shards an eval feed held in memory, by data spec: eval opens a second feed on the same data for
// its test-time views, which shares them while the first copy is alive (a weak reference: once
// nothing holds it, it is garbage and its memory is the OS's again, so loading anew costs no more).
const heldForEval = new Map<string, WeakRef<ShardMemory>>();

/** An eval-order feed: centre crops, or (views) test-time augmentation views. */
export const openEvalFeed: OpenEvalFeed = async (o) => {
  const held = o.inMemory ? heldForEval.get(o.data)?.deref() : undefined;
  const loader = await Loader.open({
    data: o.data,
    batchSize: o.batchSize,
    mode: 'eval',
    res: o.res,
    seed: o.seed,
    workers: o.workers,
    verify: o.verify ?? false,
    inMemory: held ?? inMemoryOption(o.inMemory ?? false, o.log ?? (() => {})),
    frameDtype: resolveFrameDtype(o.frameDtype),
    ...(o.normalize ? { normalize: o.normalize } : {}),
    ...(o.views ? { transform: 'train' as const, augment: o.views } : { transform: 'eval' as const }),
  });
  if (loader.heldShards) heldForEval.set(o.data, new WeakRef(loader.heldShards));
  return loader;
};
