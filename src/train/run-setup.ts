// Setting a run up: the model (new, fine-tuned from a pre-trained body, or resumed), its
// parameter groups and optimizer, the schedule, and the position to start from. Everything the
// epoch loop reads but never replaces lives in the TrainRun this returns.
import * as tf from '@tensorflow/tfjs';
import { parseArch } from '../model/arch.ts';
import { isHeadParam, withNewHead } from '../model/head.ts';
import { estimateTrainBytes, trainFlopsPerSample } from '../model/layout.ts';
import { Mlp, type ModelConfig } from '../model/mlp.ts';
import { DEFAULT_EVAL_CROP, type NormalizeSource } from '../model/preprocessing.ts';
import type { DatasetInfo } from '../shared/data-feed.ts';
import { Rng } from '../shared/random.ts';
import { webGpuMemoryLine } from './backends/webgpu.ts';
import { loadTrainCheckpoint, resolveCheckpoint, runDirFor, type EpochSums, type LoadedCheckpoint, type TrainerState } from './checkpoint.ts';
import { microBatchSize, mixupAlpha, type FinetuneSpec, type TrainConfig } from './config.ts';
import { createOptimizer, OPTIMIZER_SLOTS, type NamedParam, type Optimizer } from './optim/index.ts';
import { loadPretrained, resolvePretrained, type PretrainedRef } from './pretrained.ts';
import type { ScheduleSpec } from './schedule.ts';

export class TrainError extends Error {
  override readonly name = 'TrainError';
  constructor(
    readonly what: string,
    reason: string,
  ) {
    super(`${what}: ${reason}`);
  }
}

const WASM_HEAP_LIMIT = 3.5 * 2 ** 30; // 4 GiB address space, less code, stack and fragmentation
const MIX_STREAM = 0x4d495855; // "MIXU": the trainer Rng's stream id, apart from init and shuffling

export const zeroSums = (): EpochSums => ({ lossSum: 0, top1: 0, top5: 0, samples: 0, waitMs: 0, wallMs: 0 });

/** Where the run stands: advanced by the loop, saved in every checkpoint. */
export interface Position {
  /** Next batch to train: epoch and batch index within it. */
  epoch: number;
  step: number;
  /** Optimizer updates done. */
  globalStep: number;
  samplesSeen: number;
  /** Sums over the part of the current epoch already trained. */
  sums: EpochSums;
}

/** A set-up run: what the loop reads (config, model, optimizer, schedule) and its position. */
export interface TrainRun {
  o: TrainConfig;
  config: ModelConfig;
  model: Mlp;
  optimizer: Optimizer;
  /** The variables that train (linear probing: the head's only). */
  trainVars: tf.Variable[];
  frozenBody: boolean;
  rng: Rng;
  schedule: ScheduleSpec;
  stepsPerEpoch: number;
  mixupAlpha: number;
  flopsPerSample: number;
  /** Fine-tuning runs: the spec and the pre-trained model it started from. */
  finetune: { spec: FinetuneSpec; source: PretrainedRef } | null;
  resumedFrom: string | null;
  position: Position;
}

function modelConfigFor(o: TrainConfig, info: DatasetInfo): ModelConfig {
  if (info.numClasses < 1) {
    throw new TrainError('training data', 'has no class count (shards given without their index.json?): train from the index.json that npm run shard wrote');
  }
  const pairs: [keyof TrainConfig & ('res' | 'channels' | 'numClasses'), number][] = [
    ['res', info.res],
    ['channels', info.channels],
    ['numClasses', info.numClasses],
  ];
  for (const [k, v] of pairs) {
    if (o[k] !== undefined && o[k] !== v) throw new TrainError(`--${k === 'numClasses' ? 'num-classes' : k}`, `${o[k]} given, the data has ${v}`);
  }
  return { arch: parseArch(o.arch).name, res: info.res, channels: info.channels, numClasses: info.numClasses };
}

/** The fine-tuned model: the checkpoint's architecture and input, the data's classes. */
function finetuneConfigFor(o: TrainConfig, src: PretrainedRef, info: DatasetInfo): ModelConfig {
  const c = src.config;
  if (info.channels !== c.channels) {
    throw new TrainError('channels', `the checkpoint ${src.path} takes ${c.channels}-channel images, the data has ${info.channels} channels`);
  }
  if (info.res !== c.res) {
    throw new TrainError(
      'res',
      `the checkpoint ${src.path} takes ${c.res}x${c.res} images, the data feed delivers ${info.res}x${info.res} (open it at the checkpoint's res)`,
    );
  }
  if (o.numClasses !== undefined && o.numClasses !== info.numClasses)
    throw new TrainError('--num-classes', `${o.numClasses} given, the data has ${info.numClasses}`);
  return { arch: parseArch(c.arch).name, res: c.res, channels: c.channels, numClasses: info.numClasses };
}

/**
 * The model's preprocessing is what the training feed does to images, fixed for the whole run and
 * written into every checkpoint and the final config.json; its class names are the data's.
 */
function withInputs(config: ModelConfig, info: DatasetInfo): ModelConfig {
  const n = info.normalization;
  const source: NormalizeSource = n?.source === 'imagenet' || n?.source === 'dataset' ? n.source : 'explicit';
  return {
    ...config,
    ...(n ? { preprocessing: { normalization: { mean: [...n.mean], std: [...n.std], source }, evalCrop: DEFAULT_EVAL_CROP } } : {}),
    ...(info.classes.length === config.numClasses ? { classes: [...info.classes] } : {}),
  };
}

function sameStats(a: { mean: number[]; std: number[] }, b: { mean: number[]; std: number[] }): boolean {
  return a.mean.length === b.mean.length && a.mean.every((x, i) => x === b.mean[i]) && a.std.every((x, i) => x === b.std[i]);
}

/** Everything that must match for a resume to continue exactly; an error listing what does not. */
function checkResumable(resumed: LoadedCheckpoint, o: TrainConfig, config: ModelConfig, stepsPerEpoch: number): void {
  const s = resumed.state;
  const c = resumed.model.config;
  const ft = o.finetune;
  const mismatch: string[] = [];
  if (parseArch(c.arch).name !== config.arch || c.res !== config.res || c.channels !== config.channels || c.numClasses !== config.numClasses) {
    mismatch.push(
      `model ${c.arch} ${c.channels}x${c.res}x${c.res}/${c.numClasses} vs ${config.arch} ${config.channels}x${config.res}x${config.res}/${config.numClasses}`,
    );
  }
  if (s.run.batchSize !== o.batchSize || s.run.accum !== o.accum) mismatch.push(`batch ${s.run.batchSize}/accum ${s.run.accum} vs ${o.batchSize}/${o.accum}`);
  if (s.run.stepsPerEpoch !== stepsPerEpoch) mismatch.push(`${s.run.stepsPerEpoch} batches per epoch vs ${stepsPerEpoch} now`);
  if (s.optimizer.name !== o.optimizer) mismatch.push(`optimizer ${s.optimizer.name} vs ${o.optimizer}`);
  const was = c.preprocessing?.normalization;
  const now = config.preprocessing?.normalization;
  if (was && now && !sameStats(was, now)) mismatch.push(`normalisation mean ${was.mean} std ${was.std} vs mean ${now.mean} std ${now.std}`);
  // The seed orders the data (through the feed) and draws MixUp: a new one changes the run.
  if (s.run.seed !== o.seed) mismatch.push(`seed ${s.run.seed} vs ${o.seed}`);
  const ftWas = s.run.finetune;
  if (!ftWas !== !ft) mismatch.push(ftWas ? `the checkpoint is a ${ftWas.mode} fine-tuning run, this is not one` : 'the checkpoint is not a fine-tuning run');
  else if (ftWas && ft && (ftWas.mode !== ft.mode || ftWas.bodyLrMult !== ft.bodyLrMult)) {
    mismatch.push(`fine-tuning ${ftWas.mode} (body lr x${ftWas.bodyLrMult}) vs ${ft.mode} (body lr x${ft.bodyLrMult})`);
  }
  if (mismatch.length) throw new TrainError(resumed.dir, `cannot resume exactly: ${mismatch.join('; ')}`);
}

/**
 * Parameter groups: linear probing trains the head only (the body gets no gradient and no
 * optimizer state); full fine-tuning gives the body bodyLrMult x the head's rate.
 */
function parameterGroups(model: Mlp, ft: FinetuneSpec | undefined): NamedParam[] {
  const frozenBody = ft?.mode === 'linear';
  return model.params
    .filter((p) => !frozenBody || isHeadParam(p.entry.name))
    .map((p) => ({
      name: p.entry.name,
      variable: p.variable,
      ...(ft?.mode === 'full' && !isHeadParam(p.entry.name) ? { lrScale: ft.bodyLrMult } : {}),
    }));
}

/** The config with `out` fixed: --resume <run>/checkpoints/step-N without --out continues in <run>. */
export function resolveOut(options: TrainConfig): TrainConfig {
  return options.resume && options.out === options.resume ? { ...options, out: runDirFor(options.resume) } : options;
}

/**
 * Builds the run: model, optimizer, schedule, and the position (0, or `o.resume`'s checkpoint's).
 * `onStart` learns the position before the model is built, so a feed can start producing then.
 */
export function setUpRun(o: TrainConfig, info: DatasetInfo, stepsPerEpoch: number, onStart?: (epoch: number, step: number) => void): TrainRun {
  const ft = o.finetune;
  const source = ft ? resolvePretrained(ft.checkpoint) : null;
  const config = withInputs(source ? finetuneConfigFor(o, source, info) : modelConfigFor(o, info), info);
  if (stepsPerEpoch < 1) throw new TrainError('training data', `${info.numSamples} samples make no full batch of ${microBatchSize(o)}`);
  const resumed = o.resume ? loadTrainCheckpoint(o.resume) : null;
  if (!resumed && resolveCheckpoint(o.out) !== null) {
    throw new TrainError(o.out, 'already holds a checkpoint: pass --resume to continue it, or choose another --out');
  }
  if (resumed) checkResumable(resumed, o, config, stepsPerEpoch);
  onStart?.(resumed?.state.epoch ?? 0, resumed?.state.step ?? 0);

  // A new fine-tuning run: the checkpoint's body and a new seeded head. A resumed run takes
  // every weight from its own checkpoint below.
  const model =
    source && !resumed ? withNewHead(config, loadPretrained(source.path).tensors, config.numClasses, o.seed, source.weights) : new Mlp(config, o.seed);
  const named = parameterGroups(model, ft);
  const optimizer = createOptimizer(o.optimizer, named, { weightDecay: o.weightDecay, momentum: o.momentum });
  const rng = new Rng(o.seed, MIX_STREAM);
  const position: Position = { epoch: 0, step: 0, globalStep: 0, samplesSeen: 0, sums: zeroSums() };
  if (resumed) {
    const s = resumed.state;
    model.loadStateDict(resumed.model.tensors, resumed.dir);
    optimizer.load(resumed.optimizer, s.optimizer.steps);
    rng.setState(s.rng);
    Object.assign(position, { epoch: s.epoch, step: s.step, globalStep: s.globalStep, samplesSeen: s.samplesSeen, sums: { ...s.epochSums } });
  }
  const updatesPerEpoch = Math.ceil(stepsPerEpoch / o.accum);
  return {
    o,
    config,
    model,
    optimizer,
    trainVars: named.map((p) => p.variable),
    frozenBody: ft?.mode === 'linear',
    rng,
    schedule: { base: o.lr, schedule: o.schedule, warmupSteps: o.warmup, totalSteps: o.epochs * updatesPerEpoch },
    stepsPerEpoch,
    mixupAlpha: mixupAlpha(o),
    flopsPerSample: trainFlopsPerSample(model.spec, config),
    finetune: ft && source ? { spec: ft, source } : null,
    resumedFrom: resumed?.dir ?? null,
    position,
  };
}

/** The trainer state a checkpoint taken at `at` must describe. */
export function snapshot(run: TrainRun, at: Pick<Position, 'epoch' | 'step' | 'sums'>): TrainerState {
  const { o, config, optimizer, rng, position, finetune } = run;
  return {
    version: 1,
    epoch: at.epoch,
    step: at.step,
    globalStep: position.globalStep,
    samplesSeen: position.samplesSeen,
    rng: rng.getState(),
    optimizer: { name: optimizer.name, steps: optimizer.steps },
    epochSums: { ...at.sums },
    run: {
      arch: config.arch,
      batchSize: o.batchSize,
      accum: o.accum,
      seed: o.seed,
      stepsPerEpoch: run.stepsPerEpoch,
      ...(finetune ? { finetune: { mode: finetune.spec.mode, bodyLrMult: finetune.spec.bodyLrMult, from: finetune.source.weights } } : {}),
    },
    savedAt: new Date().toISOString(),
  };
}

function formatFlops(f: number): string {
  return f >= 1e9 ? `${(f / 1e9).toFixed(3)} GFLOP` : `${(f / 1e6).toFixed(3)} MFLOP`;
}

/** What the run is, in a few lines (model size, backend, batches, fine-tuning, memory warning). */
export function describeRun(run: TrainRun, log: (line: string) => void): void {
  const { o, config, model, finetune } = run;
  const micro = microBatchSize(o);
  const p = run.position;
  if (run.resumedFrom) log(`resumed from ${run.resumedFrom}: epoch ${p.epoch}, batch ${p.step}, update ${p.globalStep}`);
  log(
    `${config.arch}: ${model.numParams.toLocaleString('en-US')} params, ${formatFlops(run.flopsPerSample)} per training sample; backend ${tf.getBackend()}; ${run.stepsPerEpoch} batches of ${micro} per epoch`,
  );
  if (finetune) {
    const { spec, source } = finetune;
    const trained = run.trainVars.reduce((n, v) => n + v.size, 0);
    log(
      `fine-tuning (${spec.mode}${spec.mode === 'full' ? `, body lr x${spec.bodyLrMult}` : ', body frozen'}) from ${source.weights}: ` +
        `head ${source.config.numClasses} -> ${config.numClasses} classes; ${trained.toLocaleString('en-US')} parameters train`,
    );
  }
  const bytes = estimateTrainBytes(model.spec, config, micro, OPTIMIZER_SLOTS[o.optimizer]);
  if (tf.getBackend() === 'wasm' && bytes > WASM_HEAP_LIMIT) {
    // wasm32 cannot address more than 4 GiB; running out there aborts the whole process.
    const accum = Math.ceil((o.accum * bytes) / WASM_HEAP_LIMIT);
    log(
      `warning: this step needs ~${(bytes / 2 ** 30).toFixed(1)} GiB, more than the wasm backend's 4 GiB heap; try --accum ${accum} or a smaller --batch-size`,
    );
  }
  // Throws before the first step when one tensor cannot be bound on this device.
  if (tf.getBackend() === 'webgpu') log(webGpuMemoryLine(model.spec, config, micro, OPTIMIZER_SLOTS[o.optimizer], o.accum));
}

export function disposeRun(run: TrainRun): void {
  run.optimizer.dispose();
  run.model.dispose();
}
