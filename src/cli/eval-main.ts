// The eval command without its data plumbing (the caller passes the feed factory): loads a
// model, scores it on a dataset with centre crops, optionally with test-time augmentation and
// ImageNet ReaL labels, and reports on stderr (human) and stdout (one JSON line).
import { availableParallelism } from 'node:os';
import { Mlp, type ModelConfig } from '../model/mlp.ts';
import type { LoaderOptions } from '../pipeline/loader/loader.ts';
import { atomicWriteFile } from '../shared/atomic-write.ts';
import type { DataFeed, ReplacedSamples } from '../shared/data-feed.ts';
import { BACKEND_ORDER, describeSelection, selectBackend, type BackendChoice } from '../train/backend.ts';
import { blasThreadsFor } from '../train/blas/cblas.ts';
import { FRAME_DTYPE_CHOICES, FRAME_DTYPE_HELP, type FrameDtypeChoice } from '../train/frame-dtype.ts';
import { EvalError, predict, predictTta, readRealLabels, scoreReal, type RealScore } from '../train/predict.ts';
import { loadPretrained, resolvePretrained } from '../train/pretrained.ts';
import { IN_MEMORY_HELP } from './in-memory.ts';
import { EXIT, runCommand, UsageError } from './command.ts';
import type { AugmentSettings } from '../pipeline/augment/settings.ts';
import type { OpenEvalFeed } from './feeds.ts';
import { cropFlags, FINETUNE_DEFAULTS } from './finetune-main.ts';
import {
  MAX_WORKERS,
  NORMALIZE_SPEC,
  nonNegInt,
  normalizeRequest,
  num,
  oneOf,
  parseFlags,
  positiveInt,
  str,
  workerCount,
  type NormalizeRequest,
  type OptionSpec,
} from './flags.ts';
import { COMMAND_DEFAULTS } from './train-flags.ts';
import { defaultIo, parseCommandLine, type TrainIo } from './train-main.ts';

export interface EvalOptions {
  checkpoint: string;
  data: string;
  batchSize: number;
  /** Test-time augmentation views; 0 = none. */
  tta: number;
  crop: AugmentSettings;
  seed: number;
  real?: string;
  out?: string;
  workers: number;
  verify: boolean;
  inMemory: boolean;
  maxCorrupt: number;
  /** BLAS threads for the wasm backend's matMuls; undefined = cores - workers. */
  threads?: number;
  backend: BackendChoice | 'auto';
  quiet: boolean;
  frameDtype: FrameDtypeChoice;
  /** Overrides the model's normalisation (said so in the output). */
  normalize?: NormalizeRequest;
}

export const EVAL_DEFAULTS = { batchSize: 1024, tta: 0, seed: 0, crop: FINETUNE_DEFAULTS.crop } as const;

const SPEC: OptionSpec = {
  checkpoint: { type: 'string' },
  data: { type: 'string' },
  'batch-size': { type: 'string' },
  tta: { type: 'string' },
  'crop-scale': { type: 'string' },
  'crop-ratio': { type: 'string' },
  seed: { type: 'string' },
  real: { type: 'string' },
  out: { type: 'string' },
  workers: { type: 'string' },
  verify: { type: 'boolean' },
  'in-memory': { type: 'boolean' },
  'max-corrupt': { type: 'string' },
  threads: { type: 'string' },
  backend: { type: 'string' },
  'frame-dtype': { type: 'string' },
  ...NORMALIZE_SPEC,
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

const fmtPair = (p: readonly number[]): string => `${p[0]},${p[1]}`;

export const EVAL_HELP = `Usage: eval --checkpoint <model> --data <index.json> [--tta N] [--real <real.json>] [options]

Scores a model on a dataset: loss, top-1 and top-5 with centre crops (the evaluation transform,
images read at the model's resolution; smaller ones are upscaled), in the data's order.

  --checkpoint <path>        a model directory (model.safetensors + config.json), a run's --out (its final
                             model, else its latest checkpoint), a checkpoint directory, or a .safetensors
                             file with config.json beside it
  --data <index.json>        the dataset (shards); its channels and classes must be the model's; a path,
                             a folder holding one, or an http(s):// or s3:// URL
  --batch-size N             ${EVAL_DEFAULTS.batchSize}
  --tta N                    test-time augmentation as the paper (which uses 100): also average the softmax
                             probabilities of N random crops (+ flips) of every image and report top-1/top-5
                             (and the loss) of the average; 0 = off (${EVAL_DEFAULTS.tta})
  --crop-scale LO,HI         TTA crops' area fraction range (${fmtPair(EVAL_DEFAULTS.crop.scale)}, the fine-tuning crops)
  --crop-ratio LO,HI         TTA crops' aspect ratio range (${fmtPair(EVAL_DEFAULTS.crop.ratio)})
  --seed N                   TTA crop seed (${EVAL_DEFAULTS.seed})
  --real <real.json>         also score ImageNet ReaL: the official real.json (a JSON list with one list of
                             class indices per validation image, in sorted file-name order). The sample
                             with key K counts as right if its top-1 class is in real[K]; images with an
                             empty list are left out (and counted). Our shard keys are positions in the
                             sharded order, so shard the whole validation set with --no-shuffle (no --limit,
                             no --val-fraction) and a labels file covering every image (a file missing from
                             it is not listed and shifts the later positions; an undecodable one only leaves
                             a gap), e.g.
                               npm run shard -- imagenet <val dir> --labels LOC_val_solution.csv \\
                                 --classes shards/in1k-train/index.json --no-shuffle --split val \\
                                 --out shards/in1k-val
                             (then key K = the position of the file name in sorted order = real.json's index)
  --out <file.json>          also write the JSON result to this file
  --workers N                decode workers (default: cores - 1; at most ${MAX_WORKERS})
  --threads N                BLAS threads for the wasm backend's matMuls (default: cores - workers, at least 1)
  --verify                   check every shard's md5 against the index first (sizes are always checked)
  --in-memory                ${IN_MEMORY_HELP}
  --max-corrupt N            fail when more than N undecodable samples were replaced (${COMMAND_DEFAULTS.maxCorrupt});
                             with any replaced, the result is marked "valid": false and NOT VALID
  --backend NAME             auto|${BACKEND_ORDER.join('|')}
  --frame-dtype D            auto|uint8|float32: ${FRAME_DTYPE_HELP}
  --normalize dataset|imagenet, --mean A,B,C --std X,Y,Z
                             override the model's recorded input normalisation (default: the model's)
  --quiet                    no per-view progress lines
  -h, --help                 this text

Prints a summary on stderr and one JSON line on stdout: {"type":"eval", "loss", "top1", "top5",
"samples", ...; "real": {...} with --real; "tta": {"views", "loss", "top1", "top5", "real"?} with --tta}
(accuracies in percent). Exit status: 0 done, 1 failure (no model at --checkpoint, data that does
not fit the model, bad ReaL file), 2 usage error.
`;

export function parseEvalArgs(argv: readonly string[]): { help: true } | { help: false; options: EvalOptions } {
  const { raw } = parseFlags(argv, SPEC);
  if (raw['help']) return { help: true };
  const checkpoint = str(raw, 'checkpoint');
  if (checkpoint === undefined) throw new UsageError('required: the model to evaluate', 'checkpoint');
  const data = str(raw, 'data');
  if (data === undefined) throw new UsageError('required: the dataset index (index.json)', 'data');
  const real = str(raw, 'real');
  const normalize = normalizeRequest(raw);
  const out = str(raw, 'out');
  return {
    help: false,
    options: {
      checkpoint,
      data,
      batchSize: num(raw, 'batch-size', EVAL_DEFAULTS.batchSize, positiveInt),
      tta: num(raw, 'tta', EVAL_DEFAULTS.tta, nonNegInt),
      crop: cropFlags(raw, EVAL_DEFAULTS.crop),
      seed: num(raw, 'seed', EVAL_DEFAULTS.seed, nonNegInt),
      ...(real !== undefined ? { real } : {}),
      ...(out !== undefined ? { out } : {}),
      workers: num(raw, 'workers', Math.max(1, availableParallelism() - 1), workerCount),
      ...(raw['threads'] !== undefined ? { threads: num(raw, 'threads', 1, positiveInt) } : {}),
      verify: Boolean(raw['verify']),
      inMemory: Boolean(raw['in-memory']),
      maxCorrupt: num(raw, 'max-corrupt', COMMAND_DEFAULTS.maxCorrupt, nonNegInt),
      backend: oneOf(raw, 'backend', ['auto', ...BACKEND_ORDER] as const, 'auto'),
      quiet: Boolean(raw['quiet']),
      frameDtype: oneOf(raw, 'frame-dtype', FRAME_DTYPE_CHOICES, 'auto'),
      ...(normalize ? { normalize } : {}),
    },
  };
}

const pct = (x: number): string => `${x.toFixed(2)}%`;
const round = (x: number, d = 6): number => Math.round(x * 10 ** d) / 10 ** d;

function realJson(path: string, r: RealScore): Record<string, unknown> {
  return { labels: path, top1: round(r.top1, 4), right: r.right, wrong: r.wrong, left_out: r.leftOut, scored: r.scored };
}

function realLine(what: string, r: RealScore): string {
  return `ReaL (${what}): top-1 ${pct(r.top1)} (${r.right} right, ${r.wrong} wrong of ${r.scored}; ${r.leftOut} left out with no ReaL label)`;
}

/**
 * The inputs the model was trained on: its recorded normalisation. An explicit --normalize or
 * --mean/--std overrides it and says so; a model written before normalisation was recorded gets
 * the data's own statistics, with a warning.
 */
function evalNormalize(o: EvalOptions, c: ModelConfig, io: Pick<TrainIo, 'stderr'>): LoaderOptions['normalize'] {
  const req = o.normalize;
  const recorded = c.preprocessing?.normalization;
  if (req) {
    const what =
      req.kind === 'explicit' ? `mean ${req.mean.join(',')} std ${req.std.join(',')}` : `the ${req.kind === 'imagenet' ? 'ImageNet' : "data's own"} statistics`;
    io.stderr(`note: inputs normalised with ${what} (--normalize/--mean/--std), not the model's recorded normalisation${recorded ? '' : ' (it has none)'}\n`);
    return req.kind === 'explicit' ? { mean: req.mean, std: req.std } : req.kind;
  }
  if (recorded) return { mean: recorded.mean, std: recorded.std };
  io.stderr(
    `warning: ${o.checkpoint} records no input normalisation (written before it was); assuming the data's own per-channel statistics, as the model's training run used for its data\n`,
  );
  return 'dataset';
}

function checkFits(feed: DataFeed, model: Mlp, data: string): void {
  const i = feed.info;
  const c = model.config;
  if (i.channels !== c.channels) throw new EvalError('channels', `the model takes ${c.channels}-channel images, ${data} has ${i.channels} channels`);
  if (i.res !== c.res) throw new EvalError('res', `the model takes ${c.res}x${c.res} images, the feed delivers ${i.res}x${i.res}`);
  if (i.numClasses !== c.numClasses)
    throw new EvalError('classes', `the model has ${c.numClasses} classes, ${data} has ${i.numClasses} (fine-tune it first: npm run finetune)`);
}

export async function runEvalCli(argv: string[], openFeed: OpenEvalFeed, io: TrainIo = defaultIo): Promise<number> {
  return runCommand('eval', io, async () => {
    const parsed = parseCommandLine(argv, parseEvalArgs, EVAL_HELP, io);
    return typeof parsed === 'number' ? parsed : evaluateModel(parsed, openFeed, io);
  });
}

/**
 * Opens a feed, checks it fits the model, runs `use`, and closes the feed. Samples the feed had to
 * replace (undecodable) come back with the result: a score over them is not the dataset's, and
 * more than `maxCorrupt` fails the command.
 */
async function withFeed<T>(open: Promise<DataFeed>, model: Mlp, o: EvalOptions, use: (feed: DataFeed) => Promise<T>): Promise<[T, ReplacedSamples]> {
  const feed = await open;
  try {
    checkFits(feed, model, o.data);
    const result = await use(feed);
    const replaced = feed.replaced?.() ?? { count: 0, samples: [] };
    if (replaced.count > o.maxCorrupt) {
      const first = replaced.samples[0];
      throw new EvalError(
        'data',
        `${replaced.count} samples could not be decoded and were replaced, more than --max-corrupt ${o.maxCorrupt}${first ? `; the first: ${first.shard}#${first.key}: ${first.reason}` : ''}`,
      );
    }
    return [result, { count: replaced.count, samples: replaced.samples.slice(0, 10) }];
  } finally {
    await feed.close();
  }
}

function replacedJson(r: ReplacedSamples): Record<string, unknown> {
  return { count: r.count, first: r.samples.map((x) => ({ shard: x.shard, key: x.key, reason: x.reason })) };
}

async function evaluateModel(o: EvalOptions, openFeed: OpenEvalFeed, io: TrainIo): Promise<number> {
  let model: Mlp | null = null;
  try {
    resolvePretrained(o.checkpoint);
    // Read the ReaL labels before spending time on the data.
    const real = o.real !== undefined ? readRealLabels(o.real) : null;
    const selection = await selectBackend(o.backend, io.backendDeps, { threads: blasThreadsFor(o) });
    io.stderr(`${describeSelection(selection)}\n`);
    const src = loadPretrained(o.checkpoint);
    model = new Mlp(src.config);
    model.loadStateDict(src.tensors, src.weights);
    const c = model.config;
    const normalize = evalNormalize(o, c, io);
    const base = {
      data: o.data,
      batchSize: o.batchSize,
      res: c.res,
      workers: o.workers,
      seed: o.seed,
      frameDtype: o.frameDtype,
      normalize,
      inMemory: o.inMemory,
      log: (line: string) => io.stderr(`${line}\n`),
    };

    const m = model;
    const [centre, replaced] = await withFeed(openFeed({ ...base, verify: o.verify, views: null }), m, o, (feed) => predict(m, feed));
    const lines = [
      `eval ${c.arch} (${src.weights}) on ${o.data}: ${centre.samples.toLocaleString('en-US')} images at ${c.channels}x${c.res}x${c.res}`,
      `centre crop: loss ${centre.loss.toFixed(4)}, top-1 ${pct(centre.top1)}, top-5 ${pct(centre.top5)}`,
    ];
    const result: Record<string, unknown> = {
      type: 'eval',
      checkpoint: o.checkpoint,
      weights: src.weights,
      arch: c.arch,
      res: c.res,
      channels: c.channels,
      num_classes: c.numClasses,
      data: o.data,
      samples: centre.samples,
      loss: round(centre.loss),
      top1: round(centre.top1, 4),
      top5: round(centre.top5, 4),
      seconds: round(centre.seconds, 3),
    };
    const keysFor = (keys: string[] | null): string[] => {
      if (!keys) throw new EvalError('--real', 'the data feed gave no sample keys');
      return keys;
    };
    if (real && o.real) {
      const r = scoreReal(real, keysFor(centre.keys), centre.pred);
      result['real'] = realJson(o.real, r);
      lines.push(realLine('centre crop', r));
    }
    if (o.tta > 0) {
      const [tta] = await withFeed(openFeed({ ...base, views: o.crop }), m, o, (feed) =>
        predictTta(m, feed, o.tta, (v) => {
          if (!o.quiet) io.stderr(`tta: view ${v + 1}/${o.tta} done\n`);
        }),
      );
      const t: Record<string, unknown> = {
        views: tta.views,
        crop_scale: o.crop.scale,
        crop_ratio: o.crop.ratio,
        flip: o.crop.flip,
        seed: o.seed,
        loss: round(tta.loss),
        top1: round(tta.top1, 4),
        top5: round(tta.top5, 4),
        seconds: round(tta.seconds, 3),
      };
      lines.push(
        `TTA (${tta.views} views, crop scale ${fmtPair(o.crop.scale)}, ratio ${fmtPair(o.crop.ratio)}, flips): loss ${tta.loss.toFixed(4)}, top-1 ${pct(tta.top1)}, top-5 ${pct(tta.top5)}`,
      );
      if (real && o.real) {
        const r = scoreReal(real, keysFor(tta.keys), tta.pred);
        t['real'] = realJson(o.real, r);
        lines.push(realLine('TTA', r));
      }
      result['tta'] = t;
    }
    result['backend'] = selection.backend;
    result['normalize'] =
      typeof normalize === 'object' ? { mean: normalize.mean, std: normalize.std, from: o.normalize ? 'option' : 'model' } : { from: normalize };
    // A score over replaced images is not the score of the dataset: never reported as one.
    result['valid'] = replaced.count === 0;
    if (replaced.count > 0) {
      result['replaced'] = replacedJson(replaced);
      const first = replaced.samples[0];
      lines.push(
        `NOT VALID: ${replaced.count} of ${centre.samples} images could not be decoded and were replaced by others${first ? ` (first: ${first.shard}#${first.key}: ${first.reason})` : ''}; the figures above are not this dataset's`,
      );
    }
    if (o.out) {
      const out = o.out;
      atomicWriteFile(out, `${JSON.stringify(result, null, 2)}\n`);
      lines.push(`written: ${out}`);
    }
    io.stderr(`${lines.join('\n')}\n`);
    io.stdout(`${JSON.stringify(result)}\n`);
    return EXIT.ok;
  } finally {
    model?.dispose();
  }
}
