// The train command's flags: the training configuration (src/train/config.ts) plus what only a
// command line has (data paths, backend, worker threads, --dry-run, --quiet), with --help.
import { availableParallelism } from 'node:os';
import { parseArch } from '../model/arch.ts';
import { BACKEND_ORDER, type BackendChoice } from '../train/backend.ts';
import { DEFAULTS, type RecipeDefaults, type TrainConfig } from '../train/config.ts';
import { FRAME_DTYPE_CHOICES, FRAME_DTYPE_HELP, type FrameDtypeChoice } from '../train/frame-dtype.ts';
import { MIXUP_PARTNERS } from '../train/mixup.ts';
import { OPTIMIZER_NAMES } from '../train/optim/index.ts';
import { SCHEDULE_NAMES } from '../train/schedule.ts';
import { IN_MEMORY_HELP } from './in-memory.ts';
import { UsageError } from './command.ts';
import {
  MAX_WORKERS,
  NORMALIZE_SPEC,
  nonNeg,
  nonNegInt,
  normalizeRequest,
  num,
  oneOf,
  optionalNum,
  parseFlags,
  positiveInt,
  str,
  unit,
  workerCount,
  type NormalizeRequest,
  type OptionSpec,
  type Raw,
} from './flags.ts';

/** What a training command line gives: the loop's configuration and the command's own flags. */
export interface TrainFlags extends TrainConfig {
  /** Training set index (read by the command's feed factory, not by the trainer). */
  data?: string;
  val?: string;
  backend: BackendChoice | 'auto';
  dryRun: boolean;
  /** Decode threads of the data pipeline. */
  workers: number;
  /** BLAS threads for the wasm backend's matMuls; undefined = the cores the workers leave (train/blas/cblas.ts). */
  threads?: number;
  /** Check every shard's md5 against its index before training (sizes are always checked). */
  verify: boolean;
  inMemory: boolean;
  /** Batch frames from the loader (read by the feed factory); auto: uint8 on GPU backends. */
  frameDtype: FrameDtypeChoice;
  /** --normalize / --mean / --std: the model's normalisation, fixed at the start (default: the training data's). */
  normalize?: NormalizeRequest;
  /** Give up when more than this many samples had to be replaced (undecodable) in a run. */
  maxCorrupt: number;
  quiet: boolean;
}

/** The command's own defaults beside the recipe's. */
export const COMMAND_DEFAULTS = {
  backend: 'auto',
  /** Shape used by --dry-run without --data: ImageNet-21k at 64x64. */
  res: 64,
  channels: 3,
  numClasses: 11230,
  /** A few undecodable images in a large dataset are replaced and reported; more is damage. */
  maxCorrupt: 100,
} as const;

export type CommandDefaults = RecipeDefaults & { backend: BackendChoice | 'auto' };

/** The Optimisation and Run sections of --help, shared with finetune (its own defaults). */
export function optimisationHelp(d: CommandDefaults, outDefault = 'runs/<arch>'): string {
  return `Optimisation
  --epochs N                 ${d.epochs}
  --batch-size N             images per optimizer update (${d.batchSize})
  --accum N                  split each update into N micro-batches of batch-size/N (${d.accum})
  --optimizer NAME           ${OPTIMIZER_NAMES.join('|')} (${d.optimizer})
  --lr X                     ${d.lr}
  --weight-decay X           ${d.weightDecay} (decoupled for lion/adamw, inside the update for lamb, coupled for sgd)
  --momentum X               SGD momentum (${d.momentum})
  --schedule NAME            ${SCHEDULE_NAMES.join('|')} (${d.schedule})
  --warmup N                 optimizer updates of linear warm-up (${d.warmup})
  --clip X                   clip gradients to this global norm; 0 = off (${d.clip})
  --smoothing X              label smoothing (${d.smoothing})
  --mixup A                  MixUp alpha, one lambda ~ Beta(A, A) per batch; 0 = off (${d.mixup})
  --mixup-partner P          ${MIXUP_PARTNERS.join('|')}: whom each sample is mixed with (${d.mixupPartner})
  --seed N                   init, MixUp and shuffling seed (${d.seed})

Run
  --out <dir>                metrics.jsonl, checkpoints/, final model.safetensors + config.json
                             (default ${outDefault})
  --resume <dir>             continue from the latest checkpoint in <dir> (a run's --out, or one checkpoint)
  --checkpoint-every N       also checkpoint every N optimizer updates; 0 = epoch ends only (${d.checkpointEvery})
  --max-steps N              stop with a checkpoint after N optimizer updates in total
  --eval-batch-size N        (default: --batch-size)
  --backend NAME             auto|${BACKEND_ORDER.join('|')} (auto tries them in this order)
  --dry-run                  print {"params", "flops_per_sample", ...} as one JSON line and exit
  --quiet                    no progress line
  -h, --help                 this text

metrics.jsonl: a "step" line per update and an "epoch" line per epoch, each with the run's
cumulative compute as the paper counts it, compute_flops = 3 x forward FLOPs x samples
(2 FLOPs per multiply-add) and compute_pflop; the summary has computeFlops / computePflop.
Ctrl-C writes a checkpoint and exits; a second Ctrl-C exits at once.
`;
}

export const HELP = `Usage: train --data <index.json> [--val <index.json>] [options]

Trains a bottleneck (B_<depth>-Wi_<width>) or standard (S_<depth>-Wi_<width>) MLP on images
flattened in C,H,W order. Defaults are the paper's ImageNet-21k pre-training recipe.

Data and model
  --data <index.json>        training set index: a path, a folder holding one, or an http(s):// or s3:// URL
                             (remote shards are cached locally: SMLP_SHARD_CACHE, SMLP_SHARD_CACHE_MAX)
  --val <index.json>         validation set index (top-1/top-5 and loss after each epoch), the same forms
  --arch <name>              ${DEFAULTS.arch}; B_<d>-Wi_<w>[-Ex_<e>] or S_<d>-Wi_<w>
  --res N --channels N --num-classes N
                             model input/output when there is no --data (default ${COMMAND_DEFAULTS.res}, ${COMMAND_DEFAULTS.channels}, ${COMMAND_DEFAULTS.numClasses});
                             with --data they must match the data
  --no-augment               no random crops/flips (and no MixUp), as the reference does
  --workers N                decode workers for the data pipeline (default: cores - 1; at most ${MAX_WORKERS})
  --frame-dtype D            auto|uint8|float32: ${FRAME_DTYPE_HELP}
  --normalize dataset|imagenet
                             the model's input normalisation, fixed at the start and recorded in the model:
                             the training data's per-channel statistics (default) or ImageNet's
  --mean A,B,C --std X,Y,Z   explicit per-channel statistics (0-255 units) instead
  --threads N                BLAS threads for the wasm backend's matMuls (default: cores - workers, at least 1)
  --verify                   check every shard's md5 against the index first (sizes are always checked)
  --in-memory                ${IN_MEMORY_HELP}
  --max-corrupt N            fail when more than N undecodable samples were replaced (${COMMAND_DEFAULTS.maxCorrupt})

${optimisationHelp({ ...DEFAULTS, backend: COMMAND_DEFAULTS.backend })}`;

const SPEC: OptionSpec = {
  data: { type: 'string' },
  val: { type: 'string' },
  arch: { type: 'string' },
  epochs: { type: 'string' },
  'batch-size': { type: 'string' },
  accum: { type: 'string' },
  optimizer: { type: 'string' },
  lr: { type: 'string' },
  'weight-decay': { type: 'string' },
  momentum: { type: 'string' },
  smoothing: { type: 'string' },
  mixup: { type: 'string' },
  'mixup-partner': { type: 'string' },
  'no-augment': { type: 'boolean' },
  out: { type: 'string' },
  backend: { type: 'string' },
  resume: { type: 'string' },
  'dry-run': { type: 'boolean' },
  res: { type: 'string' },
  channels: { type: 'string' },
  'num-classes': { type: 'string' },
  warmup: { type: 'string' },
  schedule: { type: 'string' },
  clip: { type: 'string' },
  'checkpoint-every': { type: 'string' },
  'max-steps': { type: 'string' },
  seed: { type: 'string' },
  'eval-batch-size': { type: 'string' },
  workers: { type: 'string' },
  verify: { type: 'boolean' },
  'in-memory': { type: 'boolean' },
  'max-corrupt': { type: 'string' },
  'frame-dtype': { type: 'string' },
  threads: { type: 'string' },
  ...NORMALIZE_SPEC,
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

export type ParsedArgs = { help: true } | { help: false; options: TrainFlags };

export function parseTrainArgs(argv: readonly string[]): ParsedArgs {
  const r = parseTrainArgsWith(argv, { ...DEFAULTS, backend: COMMAND_DEFAULTS.backend }, {});
  return r.help ? { help: true } : { help: false, options: r.options };
}

/**
 * The train options with other defaults and extra options (fine-tuning): the extra options'
 * raw values come back for the caller to interpret.
 */
export function parseTrainArgsWith(
  argv: readonly string[],
  defaults: CommandDefaults,
  extra: OptionSpec,
): { help: true } | { help: false; options: TrainFlags; raw: Raw } {
  const { raw } = parseFlags(argv, { ...SPEC, ...extra });
  if (raw['help']) return { help: true };

  const arch = str(raw, 'arch') ?? defaults.arch;
  try {
    parseArch(arch);
  } catch (e) {
    throw new UsageError((e as Error).message, 'arch');
  }
  const batchSize = num(raw, 'batch-size', defaults.batchSize, positiveInt);
  const accum = num(raw, 'accum', defaults.accum, positiveInt);
  if (batchSize % accum !== 0) throw new UsageError(`batch size ${batchSize} is not divisible by ${accum}`, 'accum');
  const optional = (key: string): number | undefined => optionalNum(raw, key, positiveInt);
  const normalize = normalizeRequest(raw);

  const options: TrainFlags = {
    data: str(raw, 'data'),
    ...(str(raw, 'data') !== undefined ? { dataset: str(raw, 'data')! } : {}),
    val: str(raw, 'val'),
    arch,
    epochs: num(raw, 'epochs', defaults.epochs, positiveInt),
    batchSize,
    accum,
    optimizer: oneOf(raw, 'optimizer', OPTIMIZER_NAMES, defaults.optimizer),
    lr: num(raw, 'lr', defaults.lr, nonNeg),
    weightDecay: num(raw, 'weight-decay', defaults.weightDecay, nonNeg),
    momentum: num(raw, 'momentum', defaults.momentum, unit),
    smoothing: num(raw, 'smoothing', defaults.smoothing, unit),
    mixup: num(raw, 'mixup', defaults.mixup, nonNeg),
    mixupPartner: oneOf(raw, 'mixup-partner', MIXUP_PARTNERS, defaults.mixupPartner),
    augment: !raw['no-augment'],
    out: str(raw, 'out') ?? str(raw, 'resume') ?? `runs/${arch}`,
    backend: oneOf(raw, 'backend', ['auto', ...BACKEND_ORDER] as const, defaults.backend),
    resume: str(raw, 'resume'),
    dryRun: Boolean(raw['dry-run']),
    res: optional('res'),
    channels: optional('channels'),
    numClasses: optional('num-classes'),
    warmup: num(raw, 'warmup', defaults.warmup, nonNegInt),
    schedule: oneOf(raw, 'schedule', SCHEDULE_NAMES, defaults.schedule),
    clip: num(raw, 'clip', defaults.clip, nonNeg),
    checkpointEvery: num(raw, 'checkpoint-every', defaults.checkpointEvery, nonNegInt),
    maxSteps: optional('max-steps'),
    seed: num(raw, 'seed', defaults.seed, nonNegInt),
    evalBatchSize: num(raw, 'eval-batch-size', batchSize, positiveInt),
    workers: num(raw, 'workers', Math.max(1, availableParallelism() - 1), workerCount),
    verify: Boolean(raw['verify']),
    inMemory: Boolean(raw['in-memory']),
    frameDtype: oneOf(raw, 'frame-dtype', FRAME_DTYPE_CHOICES, 'auto'),
    ...(normalize ? { normalize } : {}),
    ...(raw['threads'] !== undefined ? { threads: num(raw, 'threads', 1, positiveInt) } : {}),
    command: ['npm run train --', ...argv].join(' '),
    maxCorrupt: num(raw, 'max-corrupt', COMMAND_DEFAULTS.maxCorrupt, nonNegInt),
    quiet: Boolean(raw['quiet']),
  };
  return { help: false, options, raw };
}
