// The training loop end to end on the wasm backend with in-memory data: metrics, checkpoints,
// exact resume (straight vs stopped + resumed, also across an epoch boundary and after Ctrl-C
// mid-accumulation), gradient accumulation, and a flat tensor count.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import t, { type Test } from 'tap';
import { estimateTrainBytes } from '../../src/model/layout.ts';
import { Mlp } from '../../src/model/mlp.ts';
import { readSafetensorsFile } from '../../src/model/safetensors.ts';
import { CHECKPOINTS_DIR, loadTrainCheckpoint, runDirFor } from '../../src/train/checkpoint.ts';
import { createOptimizer } from '../../src/train/optim/index.ts';
import { applyUpdate, microStep } from '../../src/train/step.ts';
import { train, TrainError, type UpdateInfo } from '../../src/train/train.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';
import { feedsFor, smallOptions } from './helpers.ts';

await useBackend('wasm');
const quiet = { log: () => {}, progress: null };

function lines(out: string): Record<string, unknown>[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function weights(dir: string): Map<string, number[]> {
  const m = readSafetensorsFile(join(dir, 'model.safetensors')).tensors;
  return new Map([...m].map(([k, v]) => [k, Array.from(v.data)]));
}

function optimizerState(out: string): Map<string, number[]> {
  const c = loadTrainCheckpoint(out);
  return new Map([...c.optimizer].map(([k, v]) => [k, Array.from(v.data)]));
}

t.test('trains, logs steps and epochs, checkpoints, writes a final model', async (t) => {
  const out = tempDir(t);
  const o = smallOptions(out, { epochs: 2 });
  const s = await train(o, feedsFor(o), quiet);
  t.match(s, { stoppedBy: 'completed', epochsCompleted: 2, globalStep: 12, samples: 192, modelDir: out, resumedFrom: null });
  t.ok(s.lastEval && s.lastEval.samples === 40 && s.lastEval.top1 >= 0 && s.lastEval.top5 >= s.lastEval.top1);
  const recs = lines(out);
  const steps = recs.filter((r) => r['type'] === 'step');
  const epochs = recs.filter((r) => r['type'] === 'epoch');
  t.equal(steps.length, 12);
  for (const r of steps) {
    t.match(r, { epoch: Number, step: Number, global_step: Number, loss: Number, lr: Number, images_per_sec: Number, stall_pct: Number, grad_norm: Number });
  }
  t.same(
    steps.slice(0, 4).map((r) => r['lr']),
    [5e-4, 1e-3, 1e-3, 1e-3 * 0.5 * (1 + Math.cos(Math.PI / 10))],
    'warm-up (2), then cosine over the other 10 updates',
  );
  t.equal(epochs.length, 2);
  for (const r of epochs) {
    t.match(r, {
      epoch: Number,
      train_loss: Number,
      train_top1: Number,
      train_top5: Number,
      val_loss: Number,
      val_top1: Number,
      val_top5: Number,
      images_per_sec: Number,
      stall_pct: Number,
    });
  }
  t.equal(recs.at(-1)!['type'], 'summary');
  t.ok(existsSync(join(out, 'model.safetensors')) && existsSync(join(out, 'config.json')));
  t.same(readdirSync(join(out, CHECKPOINTS_DIR)).sort(), ['latest.json', 'step-000000006', 'step-000000012']);
  const ck = loadTrainCheckpoint(out);
  t.match(ck.state, { epoch: 2, step: 0, globalStep: 12, optimizer: { name: 'lion', steps: 12 } });
  t.same(weights(ck.dir), weights(out), 'last checkpoint holds the final weights');
});

t.test('no tensor leak: the count is flat from update to update and back to start at the end', async (t) => {
  const out = tempDir(t);
  const o = smallOptions(out, { epochs: 2, accum: 2, checkpointEvery: 2 });
  const before = tf.memory().numTensors;
  const seen: UpdateInfo[] = [];
  await train(o, feedsFor(o), { ...quiet, onUpdate: (u) => seen.push(u) });
  t.equal(seen.length, 12);
  const counts = seen.map((u) => u.numTensors);
  t.same(new Set(counts.slice(1)).size, 1, `tensor counts ${counts.join(',')}`);
  t.equal(tf.memory().numTensors, before, `everything released after train(): ${tf.memory().numTensors} vs ${before}`);
});

async function straightVsResumed(t: Test, over: Parameters<typeof smallOptions>[1], stopAt: number, total: number): Promise<void> {
  const a = tempDir(t);
  const oa = smallOptions(a, { ...over, maxSteps: total });
  const sa = await train(oa, feedsFor(oa), quiet);
  t.equal(sa.globalStep, total);

  const b = tempDir(t);
  const ob = smallOptions(b, { ...over, maxSteps: stopAt });
  const sb = await train(ob, feedsFor(ob), quiet);
  t.match(sb, { stoppedBy: 'max-steps', globalStep: stopAt });
  const oc = smallOptions(b, { ...over, maxSteps: total, resume: b });
  const sc = await train(oc, feedsFor(oc), quiet);
  t.equal(sc.globalStep, total);
  t.ok(sc.resumedFrom);

  t.same(weights(b), weights(a), `weights after ${total} updates: identical`);
  t.same(optimizerState(b), optimizerState(a), 'optimizer state identical');
  const la = lines(a).filter((r) => r['type'] === 'step');
  const lb = lines(b).filter((r) => r['type'] === 'step');
  t.same(
    lb.map((r) => r['loss']),
    la.map((r) => r['loss']),
    'the same losses, update by update',
  );
  t.same(loadTrainCheckpoint(b).state.rng, loadTrainCheckpoint(a).state.rng, 'RNG state identical');
}

t.test('exact resume: 4 updates straight = 2 + resume + 2 (Lion, MixUp permute, clip, cosine)', async (t) => {
  await straightVsResumed(t, {}, 2, 4);
});

t.test('exact resume across an epoch boundary, with accumulation (AdamW, accum 2)', async (t) => {
  // 96 samples / 8 per micro-batch = 12 micro-batches = 6 updates per epoch
  await straightVsResumed(t, { optimizer: 'adamw', accum: 2 }, 5, 8);
});

t.test('Ctrl-C mid-accumulation: checkpoint at the last update, resume continues exactly', async (t) => {
  const over = { optimizer: 'sgd' as const, accum: 2, epochs: 1 };
  const a = tempDir(t);
  const oa = smallOptions(a, over);
  await train(oa, feedsFor(oa), quiet);

  const b = tempDir(t);
  const ob = smallOptions(b, over);
  const ctl = new AbortController();
  let batches = 0;
  // Abort while the 5th micro-batch (the first half of update 3) is being trained.
  const s1 = await train(ob, feedsFor(ob, { onBatch: () => ++batches === 5 && ctl.abort() }), { ...quiet, signal: ctl.signal });
  t.match(s1, { stoppedBy: 'interrupted', globalStep: 2, modelDir: null });
  t.match(loadTrainCheckpoint(b).state, { epoch: 0, step: 4, globalStep: 2 }, 'position of the last update boundary');
  const oc = smallOptions(b, { ...over, resume: b });
  const s2 = await train(oc, feedsFor(oc), quiet);
  t.match(s2, { stoppedBy: 'completed', globalStep: 6 });
  t.same(weights(b), weights(a), 'identical to the uninterrupted run');
  const ea = lines(a).filter((r) => r['type'] === 'epoch')[0]!;
  const eb = lines(b).filter((r) => r['type'] === 'epoch')[0]!;
  t.same([eb['train_loss'], eb['train_top1'], eb['val_loss']], [ea['train_loss'], ea['train_top1'], ea['val_loss']], 'epoch metrics survive the interruption');
});

t.test('the trainer hints where it starts (prefetch) before its first epoch() call, resumed runs too', async (t) => {
  const out = tempDir(t);
  const o = smallOptions(out, { optimizer: 'adamw', accum: 2, maxSteps: 5 });
  const fresh: string[] = [];
  await train(o, feedsFor(o, { calls: fresh }), quiet);
  t.same(fresh, ['prefetch 0 0', 'epoch 0 0'], 'a new run starts at epoch 0, step 0');
  // Stopped after 5 updates of 2 micro-batches: epoch 0, step 10 of 12.
  const r = smallOptions(out, { optimizer: 'adamw', accum: 2, maxSteps: 8, resume: out });
  const resumed: string[] = [];
  await train(r, feedsFor(r, { calls: resumed }), quiet);
  t.same(resumed.slice(0, 3), ['prefetch 0 10', 'epoch 0 10', 'epoch 1 0'], 'a resumed run, at its checkpoint');
});

t.test('gradient accumulation: 2 x 8 equals one batch of 16 (SGD, no MixUp)', async (t) => {
  const over = { optimizer: 'sgd' as const, mixup: 0, clip: 0, epochs: 1, maxSteps: 3 };
  const a = tempDir(t);
  const oa = smallOptions(a, { ...over, accum: 1 });
  await train(oa, feedsFor(oa), quiet);
  const b = tempDir(t);
  const ob = smallOptions(b, { ...over, accum: 2 });
  await train(ob, feedsFor(ob), quiet);
  const wa = weights(a);
  let worst = 0;
  for (const [k, v] of weights(b)) v.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - wa.get(k)![i]!))));
  t.ok(worst < 1e-6, `max weight difference ${worst}`);
});

t.test('guards: no silent overwrite, no inexact resume, data must fit the options', async (t) => {
  const out = tempDir(t);
  const o = smallOptions(out, { epochs: 1 });
  await train(o, feedsFor(o), quiet);
  await t.rejects(train(o, feedsFor(o), quiet), /already holds a checkpoint/);
  const r = smallOptions(out, { batchSize: 32, resume: out });
  await t.rejects(train(r, feedsFor(r), quiet), /cannot resume exactly: batch 16\/accum 1 vs 32\/1/);
  const r2 = smallOptions(out, { optimizer: 'sgd', resume: out });
  await t.rejects(train(r2, feedsFor(r2), quiet), /optimizer lion vs sgd/);
  const wrong = smallOptions(tempDir(t), { numClasses: 6 });
  await t.rejects(train(wrong, feedsFor(wrong), quiet), TrainError);
  await t.rejects(train(wrong, feedsFor(wrong), quiet), /--num-classes: 6 given, the data has 5/);
});

t.test('the memory estimate is within a factor ~1.5 of the measured peak (wasm)', async (t) => {
  const shape = { res: 8, channels: 3, numClasses: 20 };
  const model = new Mlp({ arch: 'B_2-Wi_64', ...shape });
  const opt = createOptimizer(
    'adamw',
    model.params.map((p) => ({ name: p.entry.name, variable: p.variable })),
    { weightDecay: 0 },
  );
  const x = tf.randomNormal([256, 192]) as tf.Tensor2D;
  const y = tf.randomUniform([256], 0, 20, 'int32') as tf.Tensor1D;
  const prof = await tf.profile(() => {
    const r = microStep(model, x, y, 0.1);
    tf.dispose([r.loss, r.top1, r.top5]);
    applyUpdate(opt, r.grads, 1e-3, 0);
  });
  const est = estimateTrainBytes(model.spec, shape, 256, 2);
  t.ok(est / prof.peakBytes > 0.66 && est / prof.peakBytes < 1.5, `estimate ${est} vs peak ${prof.peakBytes}`);
  tf.dispose([x, y]);
  opt.dispose();
  model.dispose();
});

t.test('--resume <run>/checkpoints/step-N continues the run in <run>', async (t) => {
  const out = tempDir(t);
  const o = smallOptions(out, { epochs: 2, maxSteps: 3, checkpointEvery: 1 });
  await train(o, feedsFor(o), quiet);
  const stepDir = join(out, CHECKPOINTS_DIR, 'step-000000002');
  t.ok(existsSync(stepDir), 'an older checkpoint is kept');
  t.equal(runDirFor(stepDir), out);
  t.equal(runDirFor(out), out);
  const r = smallOptions(stepDir, { epochs: 2, resume: stepDir, checkpointEvery: 1 });
  const s = await train(r, feedsFor(r), quiet);
  t.match(s, { out, globalStep: 12, stoppedBy: 'completed' });
  t.ok(s.resumedFrom?.endsWith('step-000000002'));
  t.notOk(existsSync(join(stepDir, CHECKPOINTS_DIR)), 'nothing written inside the checkpoint');
});

t.test('Ctrl-C during evaluation stops after the epoch checkpoint', async (t) => {
  const out = tempDir(t);
  const o = smallOptions(out, { epochs: 3 });
  const ctl = new AbortController();
  const feeds = feedsFor(o);
  const val = feeds.val;
  const watchedVal = {
    ...val,
    info: val.info,
    stepsPerEpoch: () => val.stepsPerEpoch(),
    close: () => val.close(),
    epoch: (e: number, k?: number) => (ctl.abort(), val.epoch(e, k)),
  };
  const s = await train(o, { train: feeds.train, val: watchedVal }, { ...quiet, signal: ctl.signal });
  t.match(s, { stoppedBy: 'interrupted', epochsCompleted: 1, globalStep: 6 });
  t.match(loadTrainCheckpoint(out).state, { epoch: 1, step: 0, globalStep: 6 });
});

t.test('a feed that breaks its own stepsPerEpoch is an error, not a silent skew', async (t) => {
  const o = smallOptions(tempDir(t), { epochs: 1 });
  const f = feedsFor(o);
  const before = tf.memory().numTensors;
  const short = { ...f.train, info: f.train.info, stepsPerEpoch: () => 7, epoch: f.train.epoch, close: f.train.close };
  await t.rejects(train(o, { train: short }, quiet), /ended epoch 0 after 6 of its 7 batches/);
  const long = { ...f.train, info: f.train.info, stepsPerEpoch: () => 5, epoch: f.train.epoch, close: f.train.close };
  await t.rejects(train(smallOptions(tempDir(t), { epochs: 1 }), { train: long }, quiet), /yielded more than its 5 batches/);
  t.equal(tf.memory().numTensors, before, 'nothing leaks on the error path');
});

t.test('replaced samples: reported with shard and key in the log, metrics and summary; past --max-corrupt the run fails', async (t) => {
  const out = tempDir(t);
  const o = smallOptions(out, { epochs: 2, mixup: 0 });
  const feeds = feedsFor(o);
  let trainReplaced = 0;
  const sample = (i: number) => ({ shard: '/data/train-000003.tar', key: String(i).padStart(9, '0'), reason: 'not a JPEG' });
  const trainFeed = {
    ...feeds.train,
    epoch: feeds.train.epoch,
    replaced: () => ({ count: trainReplaced, samples: Array.from({ length: trainReplaced }, (_, i) => sample(i)) }),
  };
  const valFeed = {
    ...feeds.val,
    info: feeds.val.info,
    stepsPerEpoch: () => feeds.val.stepsPerEpoch(),
    epoch: feeds.val.epoch.bind(feeds.val),
    close: () => feeds.val.close(),
    replaced: () => ({ count: 1, samples: [sample(7)] }),
  };
  trainReplaced = 2;
  const log: string[] = [];
  const s = await train({ ...o, maxCorrupt: 5 }, { train: trainFeed, val: valFeed }, { log: (l) => log.push(l) });
  t.match(s.replaced, { train: { count: 2, first: [{ shard: '/data/train-000003.tar', key: '000000000' }] }, val: { count: 1 } });
  t.match(log.join('\n'), /warning: 2 train samples replaced so far \(undecodable\), e\.g\. \/data\/train-000003\.tar#000000000: not a JPEG/);
  t.match(log.join('\n'), /val loss .* \(NOT VALID: 1 val images replaced\)/);
  const epochs = lines(out).filter((l) => l['type'] === 'epoch');
  t.match(epochs[0], { replaced_train: 2, replaced_val: 1, val_valid: false });

  trainReplaced = 6;
  const out2 = tempDir(t);
  await t.rejects(train({ ...o, out: out2, maxCorrupt: 5 }, { train: trainFeed }, quiet), {
    name: 'TrainError',
    message:
      /training data: 6 samples could not be decoded and were replaced, more than --max-corrupt 5; the first: \/data\/train-000003\.tar#000000000: not a JPEG/,
  });
});
