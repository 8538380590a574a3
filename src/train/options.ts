// Command-line options of the trainer, with the paper's ImageNet-21k pre-training recipe as the
// defaults (paper.md: batch 16384, Lion, lr 5e-5 from scratch, weight decay 1e-3, label
// smoothing 0.3, MixUp alpha 0.8, constant lr, no warm-up, up to 800 epochs).
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { parseArch } from '../model/arch.ts';
import { BACKEND_ORDER, type BackendChoice } from './backend.ts';
import { MIXUP_PARTNERS, type MixupPartner } from './mixup.ts';
import { OPTIMIZER_NAMES, type OptimizerName } from './optim/index.ts';
import { SCHEDULE_NAMES, type ScheduleName } from './schedule.ts';

export interface TrainOptions {
  /** Training set index (read by the caller's feed factory, not by the trainer). */
  data?: string;
  val?: string;
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
  backend: BackendChoice | 'auto';
  resume?: string;
  dryRun: boolean;
  /** Model input; taken from the data when a feed exists (and checked against it when given). */
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
  workers: number;
  /** BLAS threads for the wasm backend's matMuls; undefined = the cores the workers leave (blas/cblas.ts). */
  threads?: number;
  /** Stop (with a checkpoint) after this many optimizer updates in total. */
  maxSteps?: number;
  /** SGD momentum. */
  momentum: number;
  quiet: boolean;
  /** Fine-tune a pre-trained model instead of training from scratch (the finetune command). */
  finetune?: FinetuneSpec;
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
  backend: 'auto',
  dryRun: false,
  warmup: 0,
  schedule: 'none',
  clip: 0,
  checkpointEvery: 500,
  seed: 0,
  momentum: 0.9,
  quiet: false,
  /** Shape used by --dry-run without --data: ImageNet-21k at 64x64. */
  res: 64,
  channels: 3,
  numClasses: 11230,
} as const satisfies TrainDefaults & Record<string, unknown>;

export class OptionsError extends Error {
  override readonly name = 'OptionsError';
  constructor(readonly option: string, reason: string) {
    super(`--${option}: ${reason}`);
  }
}

/** The Optimisation and Run sections of --help, shared with finetune (its own defaults). */
export function optimisationHelp(d: TrainDefaults, outDefault = 'runs/<arch>'): string {
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
  --data <index.json>        training set index
  --val <index.json>         validation set index (top-1/top-5 and loss after each epoch)
  --arch <name>              ${DEFAULTS.arch}; B_<d>-Wi_<w>[-Ex_<e>] or S_<d>-Wi_<w>
  --res N --channels N --num-classes N
                             model input/output when there is no --data (default ${DEFAULTS.res}, ${DEFAULTS.channels}, ${DEFAULTS.numClasses});
                             with --data they must match the data
  --no-augment               no random crops/flips (and no MixUp), as the reference does
  --workers N                decode workers for the data pipeline (default: cores - 1)
  --threads N                BLAS threads for the wasm backend's matMuls (default: cores - workers, at least 1)

${optimisationHelp(DEFAULTS)}`;

const SPEC = {
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
  threads: { type: 'string' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string }>;
export type Raw = Partial<Record<string, string | boolean>>;
type Key = string;

export function num(raw: Raw, key: Key, fallback: number, check: (v: number) => string | null): number {
  const s = raw[key];
  if (s === undefined) return fallback;
  const v = Number(s);
  if (typeof s !== 'string' || s.trim() === '' || !Number.isFinite(v)) throw new OptionsError(key, `not a number: ${String(s)}`);
  const bad = check(v);
  if (bad) throw new OptionsError(key, `${bad}, got ${s}`);
  return v;
}

export const positiveInt = (v: number): string | null => (Number.isInteger(v) && v >= 1 ? null : 'must be a positive integer');
export const nonNegInt = (v: number): string | null => (Number.isInteger(v) && v >= 0 ? null : 'must be a non-negative integer');
export const nonNeg = (v: number): string | null => (v >= 0 ? null : 'must be >= 0');
const unit = (v: number): string | null => (v >= 0 && v < 1 ? null : 'must be in [0, 1)');

export function oneOf<T extends string>(raw: Raw, key: Key, choices: readonly T[], fallback: T): T {
  const s = raw[key];
  if (s === undefined) return fallback;
  if (typeof s !== 'string' || !(choices as readonly string[]).includes(s)) {
    throw new OptionsError(key, `expected one of ${choices.join(', ')}, got ${String(s)}`);
  }
  return s as T;
}

export function str(raw: Raw, key: Key): string | undefined {
  const s = raw[key];
  return typeof s === 'string' ? s : undefined;
}

export type ParsedArgs = { help: true } | { help: false; options: TrainOptions };

/** The defaults the shared options fall back to (the train command's are DEFAULTS). */
export interface TrainDefaults {
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
  backend: BackendChoice | 'auto';
  warmup: number;
  schedule: ScheduleName;
  clip: number;
  checkpointEvery: number;
  seed: number;
}

export function parseTrainArgs(argv: readonly string[]): ParsedArgs {
  const r = parseTrainArgsWith(argv, DEFAULTS, {});
  return r.help ? { help: true } : { help: false, options: r.options };
}

/**
 * The train options with other defaults and extra options (fine-tuning): the extra options'
 * raw values come back for the caller to interpret.
 */
export function parseTrainArgsWith(
  argv: readonly string[],
  defaults: TrainDefaults,
  extra: OptionSpec,
): { help: true } | { help: false; options: TrainOptions; raw: Raw } {
  let raw: Raw;
  try {
    raw = parseArgs({ args: [...argv], options: { ...SPEC, ...extra }, strict: true, allowPositionals: false }).values as Raw;
  } catch (e) {
    throw new OptionsError('args', (e as Error).message);
  }
  if (raw['help']) return { help: true };

  const arch = str(raw, 'arch') ?? defaults.arch;
  try {
    parseArch(arch);
  } catch (e) {
    throw new OptionsError('arch', (e as Error).message);
  }
  const batchSize = num(raw, 'batch-size', defaults.batchSize, positiveInt);
  const accum = num(raw, 'accum', defaults.accum, positiveInt);
  if (batchSize % accum !== 0) throw new OptionsError('accum', `batch size ${batchSize} is not divisible by ${accum}`);
  const optional = (key: Key): number | undefined => (raw[key] === undefined ? undefined : num(raw, key, 0, positiveInt));

  const options: TrainOptions = {
    data: str(raw, 'data'),
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
    workers: num(raw, 'workers', Math.max(1, availableParallelism() - 1), positiveInt),
    threads: optional('threads'),
    quiet: Boolean(raw['quiet']),
  };
  return { help: false, options, raw };
}

/** Options as a library caller would pass them: defaults filled in, then `partial` on top. */
export function trainOptions(partial: Partial<TrainOptions> & { out: string }): TrainOptions {
  const parsed = parseTrainArgs([]);
  if (parsed.help) throw new Error('unreachable');
  const merged = { ...parsed.options, ...partial };
  if (partial.batchSize !== undefined && partial.evalBatchSize === undefined) merged.evalBatchSize = partial.batchSize;
  return merged;
}

/** Images per batch the training feed must deliver. */
export function microBatchSize(o: Pick<TrainOptions, 'batchSize' | 'accum'>): number {
  return o.batchSize / o.accum;
}

/** MixUp is part of augmentation in the reference: --no-augment turns it off too. */
export function mixupAlpha(o: Pick<TrainOptions, 'mixup' | 'augment'>): number {
  return o.augment ? o.mixup : 0;
}

/** Option `key` as "LO,HI" (two finite numbers that `check` accepts), else `fallback`. */
export function pair(raw: Raw, key: string, fallback: readonly [number, number], check: (lo: number, hi: number) => string | null): [number, number] {
  const s = str(raw, key);
  if (s === undefined) return [fallback[0], fallback[1]];
  const parts = s.split(',').map((x) => x.trim());
  const v = parts.map(Number);
  if (parts.length !== 2 || parts.some((p) => p === '') || !v.every(Number.isFinite)) throw new OptionsError(key, `expected two numbers LO,HI, got ${s}`);
  const bad = check(v[0]!, v[1]!);
  if (bad) throw new OptionsError(key, `${bad}, got ${s}`);
  return [v[0]!, v[1]!];
}
