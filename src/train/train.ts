// The training loop. Data and compute overlap: the next batch is requested from the feed before
// the current one is computed, and awaited only when it is needed, so an asynchronous feed fills
// it while the step runs. Per update it logs loss, lr, images/s and the share of time spent
// waiting for data (stall %); per epoch train and validation loss / top-1 / top-5.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { ProgressLine } from '../cli/progress.ts';
import { parseArch } from '../model/arch.ts';
import { saveModel } from '../model/checkpoint.ts';
import { isHeadParam, withNewHead } from '../model/head.ts';
import { estimateTrainBytes, trainFlopsPerSample } from '../model/layout.ts';
import { Mlp, type ModelConfig } from '../model/mlp.ts';
import { Rng } from '../shared/random.ts';
import { loadTrainCheckpoint, resolveCheckpoint, runDirFor, saveTrainCheckpoint, type EpochSums, type TrainerState } from './checkpoint.ts';
import type { Batch, DataFeed, DatasetInfo } from './data-feed.ts';
import { evaluate, type EvalResult } from './evaluate.ts';
import { MetricsLog, round } from './metrics.ts';
import { drawMix } from './mixup.ts';
import { batchInput } from './normalize-batch.ts';
import { createOptimizer, OPTIMIZER_SLOTS, type NamedParam, type Optimizer } from './optim/index.ts';
import { microBatchSize, mixupAlpha, type FinetuneMode, type TrainOptions } from './options.ts';
import { loadPretrained, resolvePretrained, type PretrainedRef } from './pretrained.ts';
import { learningRate, type ScheduleSpec } from './schedule.ts';
import { applyUpdate, GradAccumulator, microStep } from './step.ts';

export interface TrainFeeds {
  train: DataFeed;
  val?: DataFeed;
}

export interface TrainRuntime {
  /** Aborting stops at the next batch: a checkpoint is written, then train() resolves. */
  signal?: AbortSignal;
  /** Human-readable status lines (default: stderr). */
  log?: (line: string) => void;
  /** Progress line stream (default: stderr); null for none. */
  progress?: NodeJS.WriteStream | null;
  /** Called after every optimizer update (tests watch tensor counts through it). */
  onUpdate?: (u: UpdateInfo) => void;
}

export interface UpdateInfo {
  epoch: number;
  step: number;
  globalStep: number;
  loss: number;
  lr: number;
  /** tf.memory().numTensors after the update: flat from update to update when nothing leaks. */
  numTensors: number;
}

export type StopReason = 'completed' | 'max-steps' | 'interrupted';

export interface TrainSummary {
  arch: string;
  params: number;
  backend: string;
  stoppedBy: StopReason;
  epochsCompleted: number;
  globalStep: number;
  /** Images trained on in this invocation (a resumed run counts from the resume). */
  samples: number;
  seconds: number;
  imagesPerSec: number;
  gflops: number;
  stallPct: number;
  /**
   * Training compute of the whole run so far (a resumed run includes what came before), as the
   * paper counts it: 3 x forward FLOPs (2 per multiply-add) x samples trained on.
   */
  computeFlops: number;
  /** computeFlops / 1e15. */
  computePflop: number;
  /** Fine-tuning runs only. */
  finetune?: { mode: FinetuneMode; bodyLrMult: number; from: string; weights: string; sourceClasses: number };
  lastTrainLoss: number | null;
  lastEval: EvalResult | null;
  /** Latest checkpoint directory written, if any. */
  checkpoint: string | null;
  /** Final weights (model.safetensors + config.json) when the run finished or hit --max-steps. */
  modelDir: string | null;
  resumedFrom: string | null;
  out: string;
}

export class TrainError extends Error {
  override readonly name = 'TrainError';
  constructor(readonly what: string, reason: string) {
    super(`${what}: ${reason}`);
  }
}

const WASM_HEAP_LIMIT = 3.5 * 2 ** 30; // 4 GiB address space, less code, stack and fragmentation
const MIX_STREAM = 0x4d495855; // "MIXU": the trainer Rng's stream id, apart from init and shuffling

function modelConfigFor(o: TrainOptions, info: DatasetInfo): ModelConfig {
  const pairs: [keyof TrainOptions & ('res' | 'channels' | 'numClasses'), number][] = [
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
function finetuneConfigFor(o: TrainOptions, src: PretrainedRef, info: DatasetInfo): ModelConfig {
  const c = src.config;
  if (info.channels !== c.channels) {
    throw new TrainError('channels', `the checkpoint ${src.path} takes ${c.channels}-channel images, the data has ${info.channels} channels`);
  }
  if (info.res !== c.res) {
    throw new TrainError('res', `the checkpoint ${src.path} takes ${c.res}x${c.res} images, the data feed delivers ${info.res}x${info.res} (open it at the checkpoint's res)`);
  }
  if (o.numClasses !== undefined && o.numClasses !== info.numClasses) throw new TrainError('--num-classes', `${o.numClasses} given, the data has ${info.numClasses}`);
  return { arch: parseArch(c.arch).name, res: c.res, channels: c.channels, numClasses: info.numClasses };
}

/** Paper-style compute: 3 x forward FLOPs (trainFlopsPerSample) x samples, in FLOPs and PFLOP. */
export function computeFields(samples: number, flopsPerSample: number): { compute_flops: number; compute_pflop: number } {
  const flops = samples * flopsPerSample;
  return { compute_flops: flops, compute_pflop: flops / 1e15 };
}

function checkSameShape(what: string, a: DatasetInfo, b: DatasetInfo): void {
  if (a.res !== b.res || a.channels !== b.channels || a.numClasses !== b.numClasses) {
    throw new TrainError(what, `${b.channels}x${b.res}x${b.res} with ${b.numClasses} classes does not match training data ${a.channels}x${a.res}x${a.res} with ${a.numClasses}`);
  }
}

function formatFlops(f: number): string {
  return f >= 1e9 ? `${(f / 1e9).toFixed(3)} GFLOP` : `${(f / 1e6).toFixed(3)} MFLOP`;
}

const zeroSums = (): EpochSums => ({ lossSum: 0, top1: 0, top5: 0, samples: 0, waitMs: 0, wallMs: 0 });

export async function train(options: TrainOptions, feeds: TrainFeeds, runtime: TrainRuntime = {}): Promise<TrainSummary> {
  const log = runtime.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  // --resume <run>/checkpoints/step-N without --out continues in <run>, not inside the checkpoint.
  const o = options.resume && options.out === options.resume ? { ...options, out: runDirFor(options.resume) } : options;
  const trainInfo = feeds.train.info;
  if (feeds.val) checkSameShape('validation data', trainInfo, feeds.val.info);
  const ft = o.finetune;
  const source = ft ? resolvePretrained(ft.checkpoint) : null;
  const config = source ? finetuneConfigFor(o, source, trainInfo) : modelConfigFor(o, trainInfo);
  const stepsPerEpoch = feeds.train.stepsPerEpoch();
  if (stepsPerEpoch < 1) throw new TrainError('training data', `${trainInfo.numSamples} samples make no full batch of ${microBatchSize(o)}`);
  const updatesPerEpoch = Math.ceil(stepsPerEpoch / o.accum);
  const schedule: ScheduleSpec = { base: o.lr, schedule: o.schedule, warmupSteps: o.warmup, totalSteps: o.epochs * updatesPerEpoch };
  const alpha = mixupAlpha(o);

  const resumed = o.resume ? loadTrainCheckpoint(o.resume) : null;
  if (!resumed && resolveCheckpoint(o.out) !== null) {
    throw new TrainError(o.out, 'already holds a checkpoint: pass --resume to continue it, or choose another --out');
  }

  // A new fine-tuning run: the checkpoint's body and a new seeded head. A resumed
  // run takes every weight from its own checkpoint below.
  const model = source && !resumed ? withNewHead(config, loadPretrained(source.path).tensors, config.numClasses, o.seed, source.weights) : new Mlp(config, o.seed);
  // Parameter groups: linear probing trains the head only (the body gets no gradient and no
  // optimizer state); full fine-tuning gives the body bodyLrMult x the head's rate.
  const frozenBody = ft?.mode === 'linear';
  const named: NamedParam[] = model.params
    .filter((p) => !frozenBody || isHeadParam(p.entry.name))
    .map((p) => ({
      name: p.entry.name,
      variable: p.variable,
      ...(ft?.mode === 'full' && !isHeadParam(p.entry.name) ? { lrScale: ft.bodyLrMult } : {}),
    }));
  const trainVars = named.map((p) => p.variable);
  const optimizer: Optimizer = createOptimizer(o.optimizer, named, { weightDecay: o.weightDecay, momentum: o.momentum });
  const rng = new Rng(o.seed, MIX_STREAM);
  let epoch = 0;
  let startStep = 0;
  let globalStep = 0;
  let samplesSeen = 0;
  let sums = zeroSums();

  const acc = new GradAccumulator();
  // Per-batch loss and hit counts of the current update, read back once per update.
  const winScalars: tf.Tensor[] = [];
  // One progress line per epoch: its rate counts from its creation.
  const newProgress = (): ProgressLine | null => (runtime.progress === null || o.quiet ? null : new ProgressLine(runtime.progress ?? process.stderr));
  let progress: ProgressLine | null = null;
  try {
    if (resumed) {
      const s = resumed.state;
      const c = resumed.model.config;
      const mismatch: string[] = [];
      if (parseArch(c.arch).name !== config.arch || c.res !== config.res || c.channels !== config.channels || c.numClasses !== config.numClasses) {
        mismatch.push(`model ${c.arch} ${c.channels}x${c.res}x${c.res}/${c.numClasses} vs ${config.arch} ${config.channels}x${config.res}x${config.res}/${config.numClasses}`);
      }
      if (s.run.batchSize !== o.batchSize || s.run.accum !== o.accum) mismatch.push(`batch ${s.run.batchSize}/accum ${s.run.accum} vs ${o.batchSize}/${o.accum}`);
      if (s.run.stepsPerEpoch !== stepsPerEpoch) mismatch.push(`${s.run.stepsPerEpoch} batches per epoch vs ${stepsPerEpoch} now`);
      if (s.optimizer.name !== o.optimizer) mismatch.push(`optimizer ${s.optimizer.name} vs ${o.optimizer}`);
      // The seed orders the data (through the feed) and draws MixUp: a new one changes the run.
      if (s.run.seed !== o.seed) mismatch.push(`seed ${s.run.seed} vs ${o.seed}`);
      const was = s.run.finetune;
      if (!was !== !ft) mismatch.push(was ? `the checkpoint is a ${was.mode} fine-tuning run, this is not one` : 'the checkpoint is not a fine-tuning run');
      else if (was && ft && (was.mode !== ft.mode || was.bodyLrMult !== ft.bodyLrMult)) {
        mismatch.push(`fine-tuning ${was.mode} (body lr x${was.bodyLrMult}) vs ${ft.mode} (body lr x${ft.bodyLrMult})`);
      }
      if (mismatch.length) throw new TrainError(resumed.dir, `cannot resume exactly: ${mismatch.join('; ')}`);
      model.loadStateDict(resumed.model.tensors, resumed.dir);
      optimizer.load(resumed.optimizer, s.optimizer.steps);
      rng.setState(s.rng);
      ({ epoch, step: startStep, globalStep, samplesSeen } = s);
      sums = { ...s.epochSums };
      log(`resumed from ${resumed.dir}: epoch ${epoch}, batch ${startStep}, update ${globalStep}`);
    }
    mkdirSync(o.out, { recursive: true });
    const metrics = new MetricsLog(join(o.out, 'metrics.jsonl'));
    // Lines after this one supersede any written past the checkpoint before the interruption.
    if (resumed) metrics.write({ type: 'resume', from: resumed.dir, epoch, step: startStep, global_step: globalStep });
    const flopsPerSample = trainFlopsPerSample(model.spec, config);
    log(`${config.arch}: ${model.numParams.toLocaleString('en-US')} params, ${formatFlops(flopsPerSample)} per training sample; backend ${tf.getBackend()}; ${stepsPerEpoch} batches of ${microBatchSize(o)} per epoch`);
    if (ft && source) {
      const trained = named.reduce((n, p) => n + p.variable.size, 0);
      log(
        `fine-tuning (${ft.mode}${ft.mode === 'full' ? `, body lr x${ft.bodyLrMult}` : ', body frozen'}) from ${source.weights}: ` +
          `head ${source.config.numClasses} -> ${config.numClasses} classes; ${trained.toLocaleString('en-US')} parameters train`,
      );
    }

    const bytes = estimateTrainBytes(model.spec, config, microBatchSize(o), OPTIMIZER_SLOTS[o.optimizer]);
    if (tf.getBackend() === 'wasm' && bytes > WASM_HEAP_LIMIT) {
      // wasm32 cannot address more than 4 GiB; running out there aborts the whole process.
      const accum = Math.ceil((o.accum * bytes) / WASM_HEAP_LIMIT);
      log(`warning: this step needs ~${(bytes / 2 ** 30).toFixed(1)} GiB, more than the wasm backend's 4 GiB heap; try --accum ${accum} or a smaller --batch-size`);
    }

    const run: TrainerState['run'] = {
      arch: config.arch,
      batchSize: o.batchSize,
      accum: o.accum,
      seed: o.seed,
      stepsPerEpoch,
      ...(ft && source ? { finetune: { mode: ft.mode, bodyLrMult: ft.bodyLrMult, from: source.weights } } : {}),
    };
    const snapshot = (e: number, step: number, s: EpochSums): TrainerState => ({
      version: 1,
      epoch: e,
      step,
      globalStep,
      samplesSeen,
      rng: rng.getState(),
      optimizer: { name: optimizer.name, steps: optimizer.steps },
      epochSums: { ...s },
      run,
      savedAt: new Date().toISOString(),
    });
    let lastCheckpoint: string | null = null;
    const checkpoint = (state: TrainerState): void => {
      lastCheckpoint = saveTrainCheckpoint(o.out, model, optimizer, state);
    };

    const t0 = performance.now();
    let runSamples = 0;
    let runWait = 0;
    let lastLoss: number | null = null;
    let lastEval: EvalResult | null = null;
    let epochsCompleted = 0;
    let stop: StopReason | null = null;
    const d = model.inputDim;

    for (; epoch < o.epochs && stop === null; epoch++, startStep = 0, sums = zeroSums()) {
      // The state as of the last update boundary: what a checkpoint taken now must describe.
      let boundary = snapshot(epoch, startStep, sums);
      progress = newProgress();
      const it = feeds.train.epoch(epoch, startStep)[Symbol.asyncIterator]();
      let pending: Promise<IteratorResult<Batch>> | null = it.next();
      let step = startStep;
      let winWait = 0;
      let winCompute = 0;
      let winSamples = 0;
      winScalars.length = 0;
      const epochSamples = stepsPerEpoch * microBatchSize(o);

      while (pending) {
        const tw = performance.now();
        // One full event-loop turn per step. A synchronous backend (wasm, cpu) blocks the loop for
        // the whole step, and when the batch is already there `await pending` alone never yields
        // a turn, so the feed's own main-thread work (taking freed ring slots, dispatching the next
        // fills) would wait for a step that happens to stall. Counted as waiting: it is the
        // pipeline's time.
        await new Promise<void>((resolve) => setImmediate(resolve));
        const r: IteratorResult<Batch> = await pending;
        const tc = performance.now();
        if (r.done) {
          pending = null;
          break;
        }
        const batch = r.value;
        if (step >= stepsPerEpoch) throw new TrainError('training data', `the feed yielded more than its ${stepsPerEpoch} batches in epoch ${epoch}`);
        // Ask for the next batch now; an asynchronous feed prepares it while this one computes.
        // (After the last batch this lets the feed's iterator finish, running its cleanup.)
        pending = it.next();
        winWait += tc - tw;

        const x = batchInput(batch, d);
        const y = tf.tensor1d(batch.labels, 'int32');
        const mix = alpha > 0 ? drawMix(rng, alpha, batch.n, o.mixupPartner) : undefined;
        const res = microStep(model, x, y, o.smoothing, mix, { vars: trainVars, frozenBody });
        tf.dispose([x, y]);
        // Nothing that aliases the batch memory survives microStep (cpu/tfjs-node may alias it).
        batch.release();
        acc.add(res.grads);
        winScalars.push(tf.tidy(() => tf.stack([tf.mul(res.loss, batch.n), res.top1, res.top5])));
        tf.dispose([res.loss, res.top1, res.top5]);
        winSamples += batch.n;

        const endOfEpoch = step + 1 === stepsPerEpoch;
        if (acc.count === o.accum || endOfEpoch) {
          const lr = learningRate(schedule, globalStep);
          const norm = applyUpdate(optimizer, acc.take(), lr, o.clip);
          globalStep++;
          const stacked = tf.stack(winScalars);
          tf.dispose(winScalars);
          winScalars.length = 0;
          const [vals, normVal] = await Promise.all([stacked.data(), norm ? norm.data() : Promise.resolve(null)]);
          stacked.dispose();
          norm?.dispose();
          let lossSum = 0;
          let h1 = 0;
          let h5 = 0;
          for (let i = 0; i < vals.length; i += 3) {
            lossSum += vals[i]!;
            h1 += vals[i + 1]!;
            h5 += vals[i + 2]!;
          }
          winCompute += performance.now() - tc;
          const wall = winWait + winCompute;
          sums.lossSum += lossSum;
          sums.top1 += h1;
          sums.top5 += h5;
          sums.samples += winSamples;
          sums.waitMs += winWait;
          sums.wallMs += wall;
          samplesSeen += winSamples;
          runSamples += winSamples;
          runWait += winWait;
          lastLoss = lossSum / winSamples;
          metrics.write({
            type: 'step',
            epoch,
            step,
            global_step: globalStep,
            samples: winSamples,
            loss: round(lastLoss, 6),
            lr,
            images_per_sec: round((1000 * winSamples) / wall, 1),
            stall_pct: round((100 * winWait) / wall, 2),
            wait_ms: round(winWait, 2),
            compute_ms: round(winCompute, 2),
            ...(normVal ? { grad_norm: round(normVal[0]!, 6) } : {}),
            ...computeFields(samplesSeen, flopsPerSample),
          });
          progress?.update(
            `epoch ${epoch + 1}/${o.epochs}`,
            sums.samples,
            epochSamples,
            ` loss ${lastLoss.toFixed(4)} lr ${lr.toExponential(2)} stall ${((100 * sums.waitMs) / sums.wallMs).toFixed(1)}%`,
          );
          runtime.onUpdate?.({ epoch, step, globalStep, loss: lastLoss, lr, numTensors: tf.memory().numTensors });
          winWait = winCompute = winSamples = 0;
          boundary = snapshot(epoch, step + 1, sums);
          if (o.maxSteps !== undefined && globalStep >= o.maxSteps) stop = 'max-steps';
          else if (runtime.signal?.aborted) stop = 'interrupted';
          else if (o.checkpointEvery > 0 && globalStep % o.checkpointEvery === 0 && !endOfEpoch) checkpoint(boundary);
        } else {
          winCompute += performance.now() - tc;
          if (runtime.signal?.aborted) stop = 'interrupted';
        }
        step++;
        if (stop !== null) break;
      }
      if (pending) {
        // Leaving mid-epoch: close the feed's iterator; a failure of the unused request is moot.
        pending.catch(() => {});
        await it.return?.();
      }
      if (stop === 'interrupted' || (stop !== null && step < stepsPerEpoch)) {
        // Micro-batches after the last update are dropped: the checkpoint restarts them.
        acc.dispose();
        tf.dispose(winScalars);
        progress?.done();
        checkpoint(boundary);
        break;
      }

      if (step < stepsPerEpoch) {
        throw new TrainError('training data', `the feed ended epoch ${epoch} after ${step} of its ${stepsPerEpoch} batches`);
      }
      progress?.done();
      const epochSeconds = sums.wallMs / 1000;
      let evalRes: EvalResult | null = null;
      if (feeds.val) {
        evalRes = await evaluate(model, feeds.val);
        lastEval = evalRes;
      }
      const rec = {
        type: 'epoch' as const,
        epoch,
        global_step: globalStep,
        train_loss: round(sums.lossSum / sums.samples, 6),
        train_top1: round((100 * sums.top1) / sums.samples, 3),
        train_top5: round((100 * sums.top5) / sums.samples, 3),
        ...(evalRes ? { val_loss: round(evalRes.loss, 6), val_top1: round(evalRes.top1, 3), val_top5: round(evalRes.top5, 3), eval_seconds: round(evalRes.seconds, 3) } : {}),
        images_per_sec: round((1000 * sums.samples) / sums.wallMs, 1),
        stall_pct: round((100 * sums.waitMs) / sums.wallMs, 2),
        seconds: round(epochSeconds, 3),
        ...computeFields(samplesSeen, flopsPerSample),
      };
      metrics.write(rec);
      log(
        `epoch ${epoch + 1}/${o.epochs}: train loss ${rec.train_loss.toFixed(4)} top-1 ${rec.train_top1.toFixed(2)}% top-5 ${rec.train_top5.toFixed(2)}%` +
          (evalRes ? `; val loss ${evalRes.loss.toFixed(4)} top-1 ${evalRes.top1.toFixed(2)}% top-5 ${evalRes.top5.toFixed(2)}%` : '') +
          `; ${rec.images_per_sec.toFixed(0)} img/s, stall ${rec.stall_pct.toFixed(1)}%`,
      );
      epochsCompleted++;
      checkpoint(snapshot(epoch + 1, 0, zeroSums()));
      // Ctrl-C during evaluation: the epoch's checkpoint above is the place to resume from.
      if (runtime.signal?.aborted && epoch + 1 < o.epochs) stop = 'interrupted';
    }
    if (stop === null) stop = 'completed';

    let modelDir: string | null = null;
    if (stop !== 'interrupted') {
      saveModel(o.out, model);
      modelDir = o.out;
    }
    const seconds = (performance.now() - t0) / 1000;
    const summary: TrainSummary = {
      arch: config.arch,
      params: model.numParams,
      backend: tf.getBackend(),
      stoppedBy: stop,
      epochsCompleted,
      globalStep,
      samples: runSamples,
      seconds: round(seconds, 3),
      imagesPerSec: round(runSamples / seconds, 1),
      gflops: round((runSamples * flopsPerSample) / seconds / 1e9, 2),
      stallPct: round(seconds > 0 ? (100 * runWait) / 1000 / seconds : 0, 2),
      computeFlops: computeFields(samplesSeen, flopsPerSample).compute_flops,
      computePflop: computeFields(samplesSeen, flopsPerSample).compute_pflop,
      lastTrainLoss: lastLoss,
      lastEval,
      checkpoint: lastCheckpoint,
      modelDir,
      resumedFrom: resumed?.dir ?? null,
      out: o.out,
      ...(ft && source ? { finetune: { mode: ft.mode, bodyLrMult: ft.bodyLrMult, from: source.path, weights: source.weights, sourceClasses: source.config.numClasses } } : {}),
    };
    metrics.write({ type: 'summary', ...summary });
    return summary;
  } finally {
    tf.dispose(winScalars);
    acc.dispose();
    optimizer.dispose();
    model.dispose();
  }
}

/** Whether `out` already holds a training checkpoint (the CLI's guard against overwriting runs). */
export function hasCheckpoint(out: string): boolean {
  return existsSync(out) && resolveCheckpoint(out) !== null;
}
