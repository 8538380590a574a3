// The training loop, in phases: set up the run (run-setup.ts), train each epoch, evaluate and
// checkpoint at its end, summarise. Data and compute overlap: the next batch is requested from
// the feed before the current one is computed, and awaited only when it is needed, so an
// asynchronous feed fills it while the step runs. Per update it logs loss, lr, images/s and the
// share of time spent waiting for data (stall %); per epoch train and validation loss / top-1 /
// top-5.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { saveModel } from '../model/checkpoint.ts';
import type { Batch, DataFeed } from '../shared/data-feed.ts';
import { resolveCheckpoint, saveTrainCheckpoint, type TrainerState } from './checkpoint.ts';
import { microBatchSize, type FinetuneMode, type TrainConfig } from './config.ts';
import { fetchToHost } from './backends/webgpu.ts';
import { evaluate, type EvalResult } from './evaluate.ts';
import { MetricsLog, round } from './metrics.ts';
import { drawMix } from './mixup.ts';
import { batchInput } from './normalize-batch.ts';
import { describeRun, disposeRun, resolveOut, setUpRun, snapshot, TrainError, zeroSums, type TrainRun } from './run-setup.ts';
import { learningRate } from './schedule.ts';
import { applyUpdate, GradAccumulator, microStep } from './step.ts';
import { UpdateWindow } from './update-window.ts';

export { TrainError } from './run-setup.ts';

export interface TrainFeeds {
  train: DataFeed;
  val?: DataFeed;
}

export interface TrainRuntime {
  /** Aborting stops at the next batch: a checkpoint is written, then train() resolves. */
  signal?: AbortSignal;
  /** Human-readable status lines (default: stderr). */
  log?: (line: string) => void;
  /** Progress within the epoch after every update, and the end of each epoch (default: none). */
  onProgress?: (e: ProgressEvent) => void;
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

export type ProgressEvent =
  | { kind: 'update'; epoch: number; epochs: number; done: number; total: number; loss: number; lr: number; stallPct: number }
  | { kind: 'epoch-start'; epoch: number }
  | { kind: 'epoch-end'; epoch: number };

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
  /** Undecodable samples the feeds replaced (absent when none): count and the first few with shard and key. */
  replaced?: {
    train?: { count: number; first: { shard: string; key: string; reason: string }[] };
    val?: { count: number; first: { shard: string; key: string; reason: string }[] };
  };
}

/** Paper-style compute: 3 x forward FLOPs (trainFlopsPerSample) x samples, in FLOPs and PFLOP. */
export function computeFields(samples: number, flopsPerSample: number): { compute_flops: number; compute_pflop: number } {
  const flops = samples * flopsPerSample;
  return { compute_flops: flops, compute_pflop: flops / 1e15 };
}

/** Samples a feed has replaced (undecodable) since it was opened. */
function replacedCount(feed: DataFeed | undefined): number {
  return feed?.replaced?.().count ?? 0;
}

/** A run over damaged data stops: more replacements than --max-corrupt is an error naming the first. */
function checkReplaced(what: string, feed: DataFeed | undefined, max: number | undefined): void {
  const r = feed?.replaced?.();
  if (!r || max === undefined || r.count <= max) return;
  const first = r.samples[0];
  throw new TrainError(
    what,
    `${r.count} samples could not be decoded and were replaced, more than --max-corrupt ${max}${first ? `; the first: ${first.shard}#${first.key}: ${first.reason}` : ''}`,
  );
}

/** The replaced samples of a feed for the summary: the count and the first few, with shard and key. */
function replacedSummary(feed: DataFeed | undefined): { count: number; first: { shard: string; key: string; reason: string }[] } | undefined {
  const r = feed?.replaced?.();
  return r && r.count > 0 ? { count: r.count, first: r.samples.slice(0, 10).map((x) => ({ shard: x.shard, key: x.key, reason: x.reason })) } : undefined;
}

function checkSameShape(what: string, a: DataFeed['info'], b: DataFeed['info']): void {
  if (a.res !== b.res || a.channels !== b.channels || a.numClasses !== b.numClasses) {
    throw new TrainError(
      what,
      `${b.channels}x${b.res}x${b.res} with ${b.numClasses} classes does not match training data ${a.channels}x${a.res}x${a.res} with ${a.numClasses}`,
    );
  }
}

/** What happens across epochs: totals of this invocation and where output went. */
interface RunLog {
  feeds: TrainFeeds;
  /** Replacements already reported in the log, per feed. */
  reported: { train: number; val: number };
  metrics: MetricsLog;
  log: (line: string) => void;
  runtime: TrainRuntime;
  t0: number;
  runSamples: number;
  runWait: number;
  lastLoss: number | null;
  lastEval: EvalResult | null;
  epochsCompleted: number;
  lastCheckpoint: string | null;
}

async function checkpoint(run: TrainRun, rl: RunLog, state: TrainerState): Promise<void> {
  // webgpu has no synchronous read in Node: fetch the values first (no-op elsewhere).
  await fetchToHost([...run.model.variables(), ...run.optimizer.state().values()]);
  rl.lastCheckpoint = saveTrainCheckpoint(run.o.out, run.model, run.optimizer, state);
}

export async function train(options: TrainConfig, feeds: TrainFeeds, runtime: TrainRuntime = {}): Promise<TrainSummary> {
  const log = runtime.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const o = resolveOut(options);
  if (feeds.val) checkSameShape('validation data', feeds.train.info, feeds.val.info);
  const run = setUpRun(o, feeds.train.info, feeds.train.stepsPerEpoch(), (epoch, step) => {
    // A run resumed at its end trains nothing: nothing to prefetch.
    if (epoch < o.epochs) feeds.train.prefetch?.(epoch, step);
  });
  try {
    mkdirSync(o.out, { recursive: true });
    const metrics = new MetricsLog(join(o.out, 'metrics.jsonl'));
    const p = run.position;
    // Lines after this one supersede any written past the checkpoint before the interruption.
    if (run.resumedFrom) metrics.write({ type: 'resume', from: run.resumedFrom, epoch: p.epoch, step: p.step, global_step: p.globalStep });
    describeRun(run, log);
    const rl: RunLog = {
      feeds,
      reported: { train: 0, val: 0 },
      metrics,
      log,
      runtime,
      t0: performance.now(),
      runSamples: 0,
      runWait: 0,
      lastLoss: null,
      lastEval: null,
      epochsCompleted: 0,
      lastCheckpoint: null,
    };
    let stop: StopReason | null = null;
    for (; p.epoch < o.epochs && stop === null; p.epoch++, p.step = 0, p.sums = zeroSums()) {
      stop = await trainEpoch(run, rl, feeds.train);
      if (stop === 'interrupted' || (stop !== null && p.step < run.stepsPerEpoch)) break;
      await endEpoch(run, rl, feeds.val);
      if (runtime.signal?.aborted && p.epoch + 1 < o.epochs) stop = 'interrupted';
    }
    return await finish(run, rl, stop ?? 'completed');
  } finally {
    disposeRun(run);
  }
}

/**
 * One epoch from the run's position: micro-batches accumulated into updates. Returns why it
 * stopped early (the position then points at the last update boundary, where a checkpoint was
 * written), or null when the epoch is complete.
 */
async function trainEpoch(run: TrainRun, rl: RunLog, feed: DataFeed): Promise<StopReason | null> {
  const { o, model, rng, position: p } = run;
  const acc = new GradAccumulator();
  const win = new UpdateWindow();
  const d = model.inputDim;
  const epochSamples = run.stepsPerEpoch * microBatchSize(o);
  // The state as of the last update boundary: what a checkpoint taken now must describe.
  let boundary = snapshot(run, p);
  rl.runtime.onProgress?.({ kind: 'epoch-start', epoch: p.epoch });
  const it = feed.epoch(p.epoch, p.step)[Symbol.asyncIterator]();
  let pending: Promise<IteratorResult<Batch>> | null = it.next();
  let stop: StopReason | null = null;
  try {
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
      if (p.step >= run.stepsPerEpoch) throw new TrainError('training data', `the feed yielded more than its ${run.stepsPerEpoch} batches in epoch ${p.epoch}`);
      // Ask for the next batch now; an asynchronous feed prepares it while this one computes.
      // (After the last batch this lets the feed's iterator finish, running its cleanup.)
      pending = it.next();
      win.waitMs += tc - tw;

      const x = batchInput(batch, d);
      const y = tf.tensor1d(batch.labels, 'int32');
      const mix = run.mixupAlpha > 0 ? drawMix(rng, run.mixupAlpha, batch.n, o.mixupPartner) : undefined;
      const res = microStep(model, x, y, o.smoothing, mix, { vars: run.trainVars, frozenBody: run.frozenBody });
      tf.dispose([x, y]);
      // Nothing that aliases the batch memory survives microStep (cpu/tfjs-node may alias it).
      batch.release();
      acc.add(res.grads);
      win.add(res, batch.n);

      const endOfEpoch = p.step + 1 === run.stepsPerEpoch;
      if (acc.count === o.accum || endOfEpoch) {
        await update(run, rl, acc, win, tc, epochSamples);
        checkReplaced('training data', feed, o.maxCorrupt);
        boundary = snapshot(run, { epoch: p.epoch, step: p.step + 1, sums: p.sums });
        if (o.maxSteps !== undefined && p.globalStep >= o.maxSteps) stop = 'max-steps';
        else if (rl.runtime.signal?.aborted) stop = 'interrupted';
        else if (o.checkpointEvery > 0 && p.globalStep % o.checkpointEvery === 0 && !endOfEpoch) await checkpoint(run, rl, boundary);
      } else {
        win.computeMs += performance.now() - tc;
        if (rl.runtime.signal?.aborted) stop = 'interrupted';
      }
      p.step++;
      if (stop !== null) break;
    }
    if (pending) {
      // Leaving mid-epoch: close the feed's iterator; a failure of the unused request is moot.
      pending.catch(() => {});
      await it.return?.();
    }
    if (stop === 'interrupted' || (stop !== null && p.step < run.stepsPerEpoch)) {
      // Micro-batches after the last update are dropped: the checkpoint restarts them.
      rl.runtime.onProgress?.({ kind: 'epoch-end', epoch: p.epoch });
      await checkpoint(run, rl, boundary);
      Object.assign(p, { step: boundary.step, sums: boundary.epochSums });
      return stop;
    }
    if (p.step < run.stepsPerEpoch) {
      throw new TrainError('training data', `the feed ended epoch ${p.epoch} after ${p.step} of its ${run.stepsPerEpoch} batches`);
    }
    return stop;
  } finally {
    acc.dispose();
    win.dispose();
  }
}

/** One optimizer update from the accumulated gradients; its metrics line and progress. */
async function update(run: TrainRun, rl: RunLog, acc: GradAccumulator, win: UpdateWindow, tc: number, epochSamples: number): Promise<void> {
  const { o, position: p } = run;
  const lr = learningRate(run.schedule, p.globalStep);
  const norm = applyUpdate(run.optimizer, acc.take(), lr, o.clip);
  p.globalStep++;
  const [sums, normVal] = await win.readBack(norm ? norm.data() : Promise.resolve(null));
  norm?.dispose();
  win.computeMs += performance.now() - tc;
  const wall = win.wallMs;
  const s = p.sums;
  s.lossSum += sums.lossSum;
  s.top1 += sums.top1;
  s.top5 += sums.top5;
  s.samples += win.samples;
  s.waitMs += win.waitMs;
  s.wallMs += wall;
  p.samplesSeen += win.samples;
  rl.runSamples += win.samples;
  rl.runWait += win.waitMs;
  const loss = sums.lossSum / win.samples;
  rl.lastLoss = loss;
  rl.metrics.write({
    type: 'step',
    epoch: p.epoch,
    step: p.step,
    global_step: p.globalStep,
    samples: win.samples,
    loss: round(loss, 6),
    lr,
    images_per_sec: round((1000 * win.samples) / wall, 1),
    stall_pct: round((100 * win.waitMs) / wall, 2),
    wait_ms: round(win.waitMs, 2),
    compute_ms: round(win.computeMs, 2),
    ...(normVal ? { grad_norm: round(normVal[0]!, 6) } : {}),
    ...computeFields(p.samplesSeen, run.flopsPerSample),
  });
  rl.runtime.onProgress?.({
    kind: 'update',
    epoch: p.epoch,
    epochs: o.epochs,
    done: s.samples,
    total: epochSamples,
    loss,
    lr,
    stallPct: (100 * s.waitMs) / s.wallMs,
  });
  rl.runtime.onUpdate?.({ epoch: p.epoch, step: p.step, globalStep: p.globalStep, loss, lr, numTensors: tf.memory().numTensors });
  win.reset();
}

/** The end of a complete epoch: validation, the epoch's metrics line, a checkpoint. */
async function endEpoch(run: TrainRun, rl: RunLog, val: DataFeed | undefined): Promise<void> {
  const { o, position: p } = run;
  const s = p.sums;
  rl.runtime.onProgress?.({ kind: 'epoch-end', epoch: p.epoch });
  const evalRes = val ? await evaluate(run.model, val) : null;
  if (evalRes) rl.lastEval = evalRes;
  checkReplaced('validation data', val, o.maxCorrupt);
  const replacedTrain = replacedCount(rl.feeds.train);
  const replacedVal = replacedCount(val);
  // A score over replaced images is not the score of the validation set: say so wherever it shows.
  const valValid = replacedVal === 0;
  const rec = {
    type: 'epoch' as const,
    epoch: p.epoch,
    global_step: p.globalStep,
    train_loss: round(s.lossSum / s.samples, 6),
    train_top1: round((100 * s.top1) / s.samples, 3),
    train_top5: round((100 * s.top5) / s.samples, 3),
    ...(evalRes
      ? { val_loss: round(evalRes.loss, 6), val_top1: round(evalRes.top1, 3), val_top5: round(evalRes.top5, 3), eval_seconds: round(evalRes.seconds, 3) }
      : {}),
    images_per_sec: round((1000 * s.samples) / s.wallMs, 1),
    stall_pct: round((100 * s.waitMs) / s.wallMs, 2),
    seconds: round(s.wallMs / 1000, 3),
    ...(replacedTrain ? { replaced_train: replacedTrain } : {}),
    ...(evalRes ? { val_valid: valValid, ...(replacedVal ? { replaced_val: replacedVal } : {}) } : {}),
    ...computeFields(p.samplesSeen, run.flopsPerSample),
  };
  rl.metrics.write(rec);
  reportReplaced(rl, 'train', rl.feeds.train);
  reportReplaced(rl, 'val', val);
  rl.log(
    `epoch ${p.epoch + 1}/${o.epochs}: train loss ${rec.train_loss.toFixed(4)} top-1 ${rec.train_top1.toFixed(2)}% top-5 ${rec.train_top5.toFixed(2)}%` +
      (evalRes
        ? `; val loss ${evalRes.loss.toFixed(4)} top-1 ${evalRes.top1.toFixed(2)}% top-5 ${evalRes.top5.toFixed(2)}%${valValid ? '' : ` (NOT VALID: ${replacedVal} val images replaced)`}`
        : '') +
      `; ${rec.images_per_sec.toFixed(0)} img/s, stall ${rec.stall_pct.toFixed(1)}%`,
  );
  rl.epochsCompleted++;
  // Ctrl-C during evaluation: this checkpoint is the place to resume from.
  await checkpoint(run, rl, snapshot(run, { epoch: p.epoch + 1, step: 0, sums: zeroSums() }));
}

/** Logs replacements a feed made since the last report, with where the first new one was. */
function reportReplaced(rl: RunLog, which: 'train' | 'val', feed: DataFeed | undefined): void {
  const r = feed?.replaced?.();
  if (!r || r.count <= rl.reported[which]) return;
  const first = r.samples[rl.reported[which]] ?? r.samples[0];
  rl.log(`warning: ${r.count} ${which} samples replaced so far (undecodable)${first ? `, e.g. ${first.shard}#${first.key}: ${first.reason}` : ''}`);
  rl.reported[which] = r.count;
}

/** The final model (unless interrupted) and the run's summary, also written to metrics.jsonl. */
async function finish(run: TrainRun, rl: RunLog, stop: StopReason): Promise<TrainSummary> {
  const { o, config, model, position: p, finetune } = run;
  let modelDir: string | null = null;
  if (stop !== 'interrupted') {
    await fetchToHost(model.variables());
    saveModel(
      o.out,
      model,
      {},
      {
        ...(o.dataset ? { dataset: o.dataset } : {}),
        ...(o.command ? { command: o.command } : {}),
        updates: p.globalStep,
        samplesSeen: p.samplesSeen,
        computeFlops: computeFields(p.samplesSeen, run.flopsPerSample).compute_flops,
        ...(finetune ? { finetunedFrom: finetune.source.weights } : {}),
      },
    );
    modelDir = o.out;
  }
  const seconds = (performance.now() - rl.t0) / 1000;
  const compute = computeFields(p.samplesSeen, run.flopsPerSample);
  const replacedTrain = replacedSummary(rl.feeds.train);
  const replacedVal = replacedSummary(rl.feeds.val);
  const summary: TrainSummary = {
    arch: config.arch,
    params: model.numParams,
    backend: tf.getBackend(),
    stoppedBy: stop,
    epochsCompleted: rl.epochsCompleted,
    globalStep: p.globalStep,
    samples: rl.runSamples,
    seconds: round(seconds, 3),
    imagesPerSec: round(rl.runSamples / seconds, 1),
    gflops: round((rl.runSamples * run.flopsPerSample) / seconds / 1e9, 2),
    stallPct: round(seconds > 0 ? (100 * rl.runWait) / 1000 / seconds : 0, 2),
    computeFlops: compute.compute_flops,
    computePflop: compute.compute_pflop,
    lastTrainLoss: rl.lastLoss,
    lastEval: rl.lastEval,
    checkpoint: rl.lastCheckpoint,
    modelDir,
    resumedFrom: run.resumedFrom,
    out: o.out,
    ...(replacedTrain || replacedVal ? { replaced: { ...(replacedTrain ? { train: replacedTrain } : {}), ...(replacedVal ? { val: replacedVal } : {}) } } : {}),
    ...(finetune
      ? {
          finetune: {
            mode: finetune.spec.mode,
            bodyLrMult: finetune.spec.bodyLrMult,
            from: finetune.source.path,
            weights: finetune.source.weights,
            sourceClasses: finetune.source.config.numClasses,
          },
        }
      : {}),
  };
  rl.metrics.write({ type: 'summary', ...summary });
  return summary;
}

/** Whether `out` already holds a training checkpoint (the CLI's guard against overwriting runs). */
export function hasCheckpoint(out: string): boolean {
  return existsSync(out) && resolveCheckpoint(out) !== null;
}
