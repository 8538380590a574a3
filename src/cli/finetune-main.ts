// The finetune command without its data plumbing (the caller plugs the feeds in, as for train):
// options with the paper's fine-tuning defaults, the checkpoint's resolution and architecture,
// --help, --dry-run, usage errors, then the shared training loop.
import { parseArch } from '../model/arch.ts';
import { DEFAULTS, FINETUNE_MODES, type FinetuneSpec } from '../train/config.ts';
import { FRAME_DTYPE_HELP } from '../train/frame-dtype.ts';
import { resolvePretrained } from '../train/pretrained.ts';
import type { TrainFeeds } from '../train/train.ts';
import { IN_MEMORY_HELP } from './in-memory.ts';
import { EXIT, runCommand, UsageError } from './command.ts';
import { FINETUNE_AUGMENT, ratioProblem, scaleProblem, type AugmentSettings } from '../pipeline/augment/settings.ts';
import { MAX_WORKERS, nonNeg, num, oneOf, pair, str, type OptionSpec, type Raw } from './flags.ts';
import { COMMAND_DEFAULTS, optimisationHelp, parseTrainArgsWith, type CommandDefaults, type TrainFlags } from './train-flags.ts';
import { defaultIo, dryRunReport, parseCommandLine, trainLocked, withFeeds, type TrainIo } from './train-main.ts';

/**
 * The paper's fine-tuning recipe (Bachmann et al. 2023): SGD momentum 0.9, head lr 0.01, body lr x0.1, batch 2048, 50
 * epochs, crop scale (0.4, 1), ratio (1, 1), smoothing 0.3, clip 1.0. MixUp is not stated for
 * fine-tuning (the reference's finetune parser defaults it to 0), nor weight decay (0 there);
 * constant lr, as the reference's default scheduler.
 */
export const FINETUNE_DEFAULTS: CommandDefaults & { bodyLrMult: number; crop: AugmentSettings } = {
  ...DEFAULTS,
  backend: 'auto',
  optimizer: 'sgd',
  momentum: 0.9,
  lr: 0.01,
  batchSize: 2048,
  epochs: 50,
  smoothing: 0.3,
  clip: 1,
  mixup: 0,
  weightDecay: 0,
  schedule: 'none',
  warmup: 0,
  bodyLrMult: 0.1,
  crop: FINETUNE_AUGMENT,
};

export interface FinetuneOptions extends TrainFlags {
  finetune: FinetuneSpec;
  /** Training crops (random resized crop area and aspect ranges) and flips. */
  crop: AugmentSettings;
  /** --arch as given (it must match the checkpoint); TrainFlags.arch becomes the checkpoint's. */
  archOption?: string;
  outGiven: boolean;
}

const EXTRA: OptionSpec = {
  checkpoint: { type: 'string' },
  mode: { type: 'string' },
  'body-lr-mult': { type: 'string' },
  'crop-scale': { type: 'string' },
  'crop-ratio': { type: 'string' },
};

const fmtPair = (p: readonly number[]): string => `${p[0]},${p[1]}`;

export const FINETUNE_HELP = `Usage: finetune --checkpoint <model> --data <index.json> --mode linear|full [--val <index.json>] [options]

Fine-tunes a pre-trained MLP on a new dataset with the paper's fine-tuning recipe (the defaults
below). The head (linear_out) is replaced by a new Linear(width -> the data's classes) with
PyTorch's nn.Linear init drawn from --seed; every other weight comes from the checkpoint.

Fine-tuning
  --checkpoint <path>        the pre-trained model: a model directory (model.safetensors + config.json),
                             a run's --out (its final model, else its latest checkpoint), a checkpoint
                             directory, or a .safetensors file with config.json beside it
  --mode linear|full         linear: only the new head trains (a linear probe: the body is frozen, gets
                             no gradients and no optimizer state); full: everything trains, the body at
                             --body-lr-mult x the head's learning rate (two parameter groups; the
                             schedule scales both)
  --body-lr-mult X           the body's learning rate as a multiple of --lr, --mode full (${FINETUNE_DEFAULTS.bodyLrMult})
  --crop-scale LO,HI         random resized crop: area fraction range (${fmtPair(FINETUNE_DEFAULTS.crop.scale)})
  --crop-ratio LO,HI         random resized crop: aspect ratio range (${fmtPair(FINETUNE_DEFAULTS.crop.ratio)})

Data and model
  --data <index.json>        training set index; images are read at the checkpoint's resolution
                             (smaller ones are upscaled by the loader) and must have its channels
  --val <index.json>         validation set index (centre crop; loss, top-1/top-5 after each epoch)
                             (both: a path, a folder holding one, or an http(s):// or s3:// URL)
  --arch, --res, --channels  taken from the checkpoint; if given they must match it
  --num-classes N            the new head's classes: the data's (if given, it must match)
  --no-augment               centre crops, no flips
  --workers N                decode workers for the data pipeline (default: cores - 1; at most ${MAX_WORKERS})
  --threads N                BLAS threads for the wasm backend's matMuls (default: cores - workers, at least 1)
  --frame-dtype D            auto|uint8|float32: ${FRAME_DTYPE_HELP}
  --verify                   check every shard's md5 against the index first (sizes are always checked)
  --in-memory                ${IN_MEMORY_HELP}
  --max-corrupt N            fail when more than N undecodable samples were replaced (${COMMAND_DEFAULTS.maxCorrupt})

${optimisationHelp(FINETUNE_DEFAULTS, 'runs/finetune-<arch>-<mode>')}To resume, run the same command with --resume <out>.
Exit status: 0 done, 1 failure (e.g. no model at --checkpoint, data with other channels than the
checkpoint's), 2 usage error, 130 interrupted.
`;

/** --crop-scale and --crop-ratio over `defaults` (finetune, and eval's TTA views); flips stay on. */
export function cropFlags(raw: Raw, defaults: AugmentSettings): AugmentSettings {
  return { scale: pair(raw, 'crop-scale', defaults.scale, scaleProblem), ratio: pair(raw, 'crop-ratio', defaults.ratio, ratioProblem), flip: defaults.flip };
}

export type ParsedFinetuneArgs = { help: true } | { help: false; options: FinetuneOptions };

export function parseFinetuneArgs(argv: readonly string[]): ParsedFinetuneArgs {
  const r = parseTrainArgsWith(argv, FINETUNE_DEFAULTS, EXTRA);
  if (r.help) return { help: true };
  const { raw, options } = r;
  const checkpoint = str(raw, 'checkpoint');
  if (checkpoint === undefined) throw new UsageError('required: the pre-trained model to start from', 'checkpoint');
  if (raw['mode'] === undefined) throw new UsageError(`required: ${FINETUNE_MODES.join(' or ')}`, 'mode');
  const mode = oneOf(raw, 'mode', FINETUNE_MODES, 'full');
  if (raw['body-lr-mult'] !== undefined && mode !== 'full') throw new UsageError('applies to --mode full only (linear trains the head alone)', 'body-lr-mult');
  const bodyLrMult = num(raw, 'body-lr-mult', FINETUNE_DEFAULTS.bodyLrMult, nonNeg);
  const crop = cropFlags(raw, FINETUNE_DEFAULTS.crop);
  const archOption = str(raw, 'arch');
  return {
    help: false,
    options: {
      ...options,
      finetune: { checkpoint, mode, bodyLrMult },
      command: ['npm run finetune --', ...argv].join(' '),
      crop,
      ...(archOption !== undefined ? { archOption } : {}),
      outGiven: raw['out'] !== undefined || raw['resume'] !== undefined,
    },
  };
}

/** Builds the train (and validation) feeds; `opts.res` is the checkpoint's resolution. */
export type MakeFinetuneFeeds = (opts: FinetuneOptions) => Promise<TrainFeeds>;

export async function runFinetuneCli(argv: string[], makeFeeds: MakeFinetuneFeeds, io: TrainIo = defaultIo): Promise<number> {
  return runCommand('finetune', io, async () => {
    const parsed = parseCommandLine(argv, parseFinetuneArgs, FINETUNE_HELP, io);
    if (typeof parsed === 'number') return parsed;
    if (!parsed.data && !parsed.dryRun) throw new UsageError('--data is required (or --dry-run)');
    const opts = withCheckpointShape(parsed);
    if (opts.dryRun) {
      const c = resolvePretrained(opts.finetune.checkpoint).config;
      let numClasses = opts.numClasses ?? c.numClasses;
      if (opts.data) numClasses = await withFeeds(await makeFeeds(opts), async (f) => f.train.info.numClasses);
      const report = {
        ...dryRunReport(opts, { res: c.res, channels: c.channels, numClasses }),
        checkpoint: resolvePretrained(opts.finetune.checkpoint).weights,
        mode: opts.finetune.mode,
      };
      io.stdout(`${JSON.stringify(report)}\n`);
      return EXIT.ok;
    }
    return trainLocked('finetune', opts, () => makeFeeds(opts), io);
  });
}

/** The options with the checkpoint's architecture and input; a given --arch/--res/--channels must match it. */
function withCheckpointShape(opts: FinetuneOptions): FinetuneOptions {
  const c = resolvePretrained(opts.finetune.checkpoint).config;
  const arch = parseArch(c.arch).name;
  if (opts.archOption !== undefined && parseArch(opts.archOption).name !== arch) throw new UsageError(`--arch ${opts.archOption}: the checkpoint is ${arch}`);
  if (opts.res !== undefined && opts.res !== c.res)
    throw new UsageError(`--res ${opts.res}: the checkpoint takes ${c.res}x${c.res} images (the loader upscales smaller data to it)`);
  if (opts.channels !== undefined && opts.channels !== c.channels)
    throw new UsageError(`--channels ${opts.channels}: the checkpoint takes ${c.channels}-channel images`);
  return { ...opts, arch, res: c.res, channels: c.channels, out: opts.outGiven ? opts.out : `runs/finetune-${arch}-${opts.finetune.mode}` };
}
