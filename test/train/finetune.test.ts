// Fine-tuning in the training loop: where the weights come from (--checkpoint forms), linear
// probing (body bit-identical, head trained, no body gradients or optimizer state), full
// fine-tuning's parameter groups checked against gradients computed here, exact resume,
// guards (channels, resolution, mode on resume), and compute accounting in metrics.jsonl.
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { parseArch } from '../../src/model/arch.ts';
import { CONFIG_FILE, loadModel, MODEL_FILE, saveModel } from '../../src/model/checkpoint.ts';
import { CheckpointError } from '../../src/model/errors.ts';
import { isHeadParam, newHeadParams, withNewHead } from '../../src/model/head.ts';
import { forwardMacs } from '../../src/model/layout.ts';
import { Mlp, type HostTensor } from '../../src/model/mlp.ts';
import { readSafetensorsFile } from '../../src/model/safetensors.ts';
import type { Batch } from '../../src/shared/data-feed.ts';
import { loadTrainCheckpoint } from '../../src/train/checkpoint.ts';
import { MemoryFeed, syntheticArrays } from '../../src/train/memory-feed.ts';
import { createOptimizer } from '../../src/train/optim/index.ts';
import type { FinetuneSpec, TrainConfig } from '../../src/train/config.ts';
import { loadPretrained, resolvePretrained } from '../../src/train/pretrained.ts';
import { microStep } from '../../src/train/step.ts';
import { computeFields, train, TrainError } from '../../src/train/train.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';
import { feedsFor, SHAPE, smallOptions } from './helpers.ts';

await useBackend('wasm');
const quiet = { log: () => {}, progress: null };

const root = tempDir(t);
/** A "pre-trained" model: B_1-Wi_16 on 3x4x4 images with 7 classes (the data has 5). */
const PRE = join(root, 'pre');
const preModel = new Mlp({ arch: 'B_1-Wi_16', res: SHAPE.res, channels: SHAPE.channels, numClasses: 7 }, 42);
saveModel(PRE, preModel);
preModel.dispose();
const preTensors = readSafetensorsFile(join(PRE, MODEL_FILE)).tensors;

function ftOptions(out: string, ft: Partial<FinetuneSpec>, over: Partial<TrainConfig> = {}): TrainConfig {
  return smallOptions(out, {
    optimizer: 'sgd',
    lr: 0.05,
    weightDecay: 0,
    mixup: 0,
    clip: 1,
    schedule: 'none',
    warmup: 0,
    epochs: 1,
    finetune: { checkpoint: PRE, mode: 'linear', bodyLrMult: 0.1, ...ft },
    ...over,
  });
}

function lines(out: string): Record<string, unknown>[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

const bitsEqual = (a: HostTensor, b: HostTensor): boolean =>
  Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength));

t.test('--checkpoint forms: model dir, .safetensors file, run dir without a final model, checkpoint dir; errors', async (t) => {
  const dir = tempDir(t);
  t.equal(resolvePretrained(PRE).weights, join(PRE, MODEL_FILE));
  t.equal(resolvePretrained(join(PRE, MODEL_FILE)).weights, join(PRE, MODEL_FILE));
  t.match(resolvePretrained(PRE).config, { arch: 'B_1-Wi_16', res: 4, channels: 3, numClasses: 7 });

  // A run stopped before its end has checkpoints but no final model: the latest checkpoint.
  const run = join(dir, 'run');
  const o = smallOptions(run, { epochs: 2, checkpointEvery: 2, maxSteps: 4 });
  await train(o, feedsFor(o), quiet);
  rmSync(join(run, MODEL_FILE));
  rmSync(join(run, CONFIG_FILE));
  const r = resolvePretrained(run);
  t.equal(r.weights, join(run, 'checkpoints', 'step-000000004', MODEL_FILE));
  t.equal(resolvePretrained(join(run, 'checkpoints', 'step-000000002')).weights, join(run, 'checkpoints', 'step-000000002', MODEL_FILE));
  t.equal(loadPretrained(run).tensors.size, 10, 'B_1: linear_in, linear_out, 2 block linears, 1 layernorm: 2 tensors each');

  t.throws(() => resolvePretrained(join(dir, 'nope')), CheckpointError);
  t.throws(() => resolvePretrained(join(dir, 'nope')), /nope: no such file or directory/);
  mkdirSync(join(dir, 'empty'));
  t.throws(() => resolvePretrained(join(dir, 'empty')), /empty: no model here/);
  mkdirSync(join(dir, 'lonely'));
  copyFileSync(join(PRE, MODEL_FILE), join(dir, 'lonely', 'w.safetensors'));
  t.throws(() => resolvePretrained(join(dir, 'lonely', 'w.safetensors')), /no config.json beside it/);
  t.throws(() => resolvePretrained(join(PRE, CONFIG_FILE)), /not a .safetensors file/);
});

t.test('linear probe: body bit-identical after training, head changed; only the head has gradients and optimizer state', async (t) => {
  const out = tempDir(t);
  const o = ftOptions(out, { mode: 'linear' }, { epochs: 2 });
  const s = await train(o, feedsFor(o), quiet);
  t.match(s, { stoppedBy: 'completed', globalStep: 12, finetune: { mode: 'linear', sourceClasses: 7, weights: join(PRE, MODEL_FILE) } });
  const after = readSafetensorsFile(join(out, MODEL_FILE)).tensors;
  t.same([...after.keys()], [...preTensors.keys()]);
  for (const [name, v] of preTensors) {
    if (isHeadParam(name)) continue;
    t.ok(bitsEqual(after.get(name)!, v), `${name} unchanged`);
  }
  const head0 = newHeadParams({ arch: 'B_1-Wi_16', res: 4, channels: 3, numClasses: 7 }, 5, o.seed);
  for (const name of ['linear_out.weight', 'linear_out.bias']) {
    t.same(after.get(name)!.shape, head0.get(name)!.shape, `${name}: new shape for 5 classes`);
    t.notOk(bitsEqual(after.get(name)!, head0.get(name)!), `${name} trained away from its init`);
  }
  t.match(JSON.parse(readFileSync(join(out, CONFIG_FILE), 'utf8')), { arch: 'B_1-Wi_16', num_classes: 5, res: 4, channels: 3 });
  const ck = loadTrainCheckpoint(out);
  t.same([...ck.optimizer.keys()].sort(), ['momentum_buffer.linear_out.bias', 'momentum_buffer.linear_out.weight'], 'optimizer state for the head only');
  t.match(ck.state.run.finetune, { mode: 'linear', bodyLrMult: 0.1, from: join(PRE, MODEL_FILE) });
  const ev = lines(out).filter((r) => r['type'] === 'epoch');
  t.ok((ev[1]!['train_loss'] as number) < (ev[0]!['train_loss'] as number), 'the probe learns');
});

t.test('linear probe step: gradients for the head only, equal to the full backward pass, without the body backward', async (t) => {
  await useBackend('cpu');
  t.teardown(() => useBackend('wasm'));
  const pre = loadPretrained(PRE);
  const model = withNewHead(pre.config, pre.tensors, 5, 0);
  const { images, labels } = syntheticArrays(8, 3, 4, 5, 9);
  const x = tf.tensor2d(images, [8, 48]);
  const y = tf.tensor1d(labels, 'int32');
  const headVars = model.params.filter((p) => isHeadParam(p.entry.name)).map((p) => p.variable);
  const matMuls = async (f: () => void): Promise<number> => (await tf.profile(f)).kernels.filter((k) => /MatMul/.test(k.name)).length;
  let probe!: ReturnType<typeof microStep>;
  let full!: ReturnType<typeof microStep>;
  const nProbe = await matMuls(() => {
    probe = microStep(model, x, y, 0.1, undefined, { vars: headVars, frozenBody: true });
  });
  const nFull = await matMuls(() => {
    full = microStep(model, x, y, 0.1);
  });
  const nForward = await matMuls(() => void tf.dispose(model.forward(x)));
  t.equal(probe.grads.length, 2, 'two gradients: linear_out weight and bias');
  const headIdx = model.params.map((p, i) => (isHeadParam(p.entry.name) ? i : -1)).filter((i) => i >= 0);
  headIdx.forEach((pi, k) => {
    const a = probe.grads[k]!.dataSync();
    const b = full.grads[pi]!.dataSync();
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    t.ok(worst < 1e-6, `head gradient ${model.params[pi]!.entry.name} matches the full pass (${worst})`);
  });
  t.equal(probe.loss.dataSync()[0], full.loss.dataSync()[0], 'same loss');
  // Backward matMuls beyond the forward pass's: the probe computes only the head's weight
  // gradient; the full pass also dW of linear_in, dX and dW of both block layers, dX of the head.
  t.equal(nProbe - nForward, 1, `probe backward: head dW only (${nProbe} matMuls, forward ${nForward})`);
  t.equal(nFull - nForward, 1 + 2 * 2 + 2, `full backward: linear_in dW + block dX/dW x2 + head dX/dW (${nFull} matMuls)`);
  tf.dispose([probe.loss, probe.top1, probe.top5, ...probe.grads, full.loss, full.top1, full.top5, ...full.grads, x, y]);
  model.dispose();
});

t.test('full fine-tuning: parameter groups - one SGD step moves the body by 0.1 x lr x grad and the head by lr x grad', async (t) => {
  const out = tempDir(t);
  const lr = 0.5;
  const o = ftOptions(out, { mode: 'full', bodyLrMult: 0.1 }, { momentum: 0, lr, clip: 0, smoothing: 0.1, maxSteps: 1 });
  let first: { images: Float32Array | Uint8Array; labels: Int32Array } | null = null;
  const feeds = feedsFor(o, { onBatch: (b: Batch) => void (first ??= { images: b.images.slice(), labels: b.labels.slice() }) });
  const s = await train(o, feeds, quiet);
  t.match(s, { globalStep: 1, finetune: { mode: 'full', bodyLrMult: 0.1 } });

  // The model before the step, rebuilt the way train() builds it, and its gradients on that batch.
  const pre = loadPretrained(PRE);
  const before = withNewHead(pre.config, pre.tensors, 5, o.seed);
  const n = first!.labels.length;
  const x = tf.tensor2d(first!.images, [n, 48]);
  const y = tf.tensor1d(first!.labels, 'int32');
  const r = microStep(before, x, y, 0.1);
  const after = loadModel(out);
  let bodyDot = 0;
  let bodySq = 0;
  let headDot = 0;
  let headSq = 0;
  let worst = 0;
  before.params.forEach((p, i) => {
    const scale = isHeadParam(p.entry.name) ? 1 : 0.1;
    const g = r.grads[i]!.dataSync();
    const w0 = p.variable.dataSync();
    const w1 = after.params[i]!.variable.dataSync();
    for (let j = 0; j < g.length; j++) {
      const delta = w1[j]! - w0[j]!;
      const want = -scale * lr * g[j]!;
      worst = Math.max(worst, Math.abs(delta - want));
      if (scale === 1) {
        headDot += -delta * g[j]!;
        headSq += lr * g[j]! * g[j]!;
      } else {
        bodyDot += -delta * g[j]!;
        bodySq += lr * g[j]! * g[j]!;
      }
    }
  });
  t.ok(worst < 2e-7, `every weight moved by -(group lr) x grad, up to float32 rounding (worst ${worst})`);
  t.ok(Math.abs(bodyDot / bodySq - 0.1) < 1e-4, `body step / (lr x grad) = ${bodyDot / bodySq}`);
  t.ok(Math.abs(headDot / headSq - 1) < 1e-4, `head step / (lr x grad) = ${headDot / headSq}`);
  t.ok(bodySq > 1e-4 && headSq > 1e-4, 'the gradients are not negligible');
  tf.dispose([x, y, r.loss, r.top1, r.top5, ...r.grads]);
  before.dispose();
  after.dispose();
});

t.test('optimizer parameter groups: lrScale multiplies the rate, decoupled decay included', async (t) => {
  const a = tf.variable(tf.tensor1d([1, -2]), true, `ga-${Math.random()}`);
  const b = tf.variable(tf.tensor1d([1, -2]), true, `gb-${Math.random()}`);
  const sgd = createOptimizer(
    'sgd',
    [
      { name: 'a', variable: a },
      { name: 'b', variable: b, lrScale: 0.1 },
    ],
    { weightDecay: 0, momentum: 0 },
  );
  const g = [tf.tensor1d([0.5, 1]), tf.tensor1d([0.5, 1])];
  sgd.apply(g, 0.2);
  t.same(Array.from(a.dataSync()), [Math.fround(1 - 0.2 * 0.5), Math.fround(-2 - 0.2)]);
  t.same(Array.from(b.dataSync()), [Math.fround(1 - 0.02 * 0.5), Math.fround(-2 - 0.02)]);
  const c = tf.variable(tf.tensor1d([1, -2]), true, `gc-${Math.random()}`);
  const lion = createOptimizer('lion', [{ name: 'c', variable: c, lrScale: 0.5 }], { weightDecay: 0.1 });
  lion.apply([g[0]!], 0.2);
  // p * (1 - lr*wd) - lr * sign(...), with lr = 0.2 * 0.5
  t.same(
    Array.from(c.dataSync()).map((v) => Math.round(v * 1e6) / 1e6),
    [1 * (1 - 0.01) - 0.1, -2 * (1 - 0.01) - 0.1].map((v) => Math.round(v * 1e6) / 1e6),
  );
  tf.dispose([a, b, c, ...g]);
  sgd.dispose();
  lion.dispose();
});

t.test('fine-tuning resumes exactly; the mode must match', async (t) => {
  const over = { epochs: 2, mixup: 0.8, momentum: 0.9 };
  const a = tempDir(t);
  const oa = ftOptions(a, { mode: 'full' }, over);
  await train(oa, feedsFor(oa), quiet);
  const b = tempDir(t);
  const ob = ftOptions(b, { mode: 'full' }, { ...over, maxSteps: 5 });
  await train(ob, feedsFor(ob), quiet);
  const oc = ftOptions(b, { mode: 'full' }, { ...over, resume: b });
  const sc = await train(oc, feedsFor(oc), quiet);
  t.match(sc, { globalStep: 12, stoppedBy: 'completed' });
  const wa = readSafetensorsFile(join(a, MODEL_FILE)).tensors;
  const wb = readSafetensorsFile(join(b, MODEL_FILE)).tensors;
  for (const [k, v] of wa) t.ok(bitsEqual(wb.get(k)!, v), `${k} identical`);
  const od = ftOptions(b, { mode: 'linear' }, { ...over, epochs: 3, resume: b });
  await t.rejects(train(od, feedsFor(od), quiet), /cannot resume exactly: fine-tuning full \(body lr x0.1\) vs linear/);
  const oe = smallOptions(b, { ...over, epochs: 3, resume: b, optimizer: 'sgd', arch: 'B_1-Wi_16' });
  await t.rejects(train(oe, feedsFor(oe), quiet), /the checkpoint is a full fine-tuning run, this is not one/);
});

t.test("the data must have the checkpoint's channels and resolution", async (t) => {
  const gray = join(tempDir(t), 'gray');
  const m = new Mlp({ arch: 'B_1-Wi_16', res: 4, channels: 1, numClasses: 7 }, 1);
  saveModel(gray, m);
  m.dispose();
  const o = ftOptions(tempDir(t), { checkpoint: gray });
  await t.rejects(train(o, feedsFor(o), quiet), TrainError);
  await t.rejects(train(o, feedsFor(o), quiet), /channels: the checkpoint .*gray takes 1-channel images, the data has 3 channels/);
  const big = join(tempDir(t), 'big');
  const m8 = new Mlp({ arch: 'B_1-Wi_16', res: 8, channels: 3, numClasses: 7 }, 1);
  saveModel(big, m8);
  m8.dispose();
  const o8 = ftOptions(tempDir(t), { checkpoint: big });
  await t.rejects(train(o8, feedsFor(o8), quiet), /res: the checkpoint .*big takes 8x8 images, the data feed delivers 4x4/);
  const missing = ftOptions(tempDir(t), { checkpoint: join(root, 'missing') });
  await t.rejects(train(missing, feedsFor(missing), quiet), CheckpointError);
});

t.test('compute accounting: cumulative 3 x forward FLOPs x samples in every step and epoch line and the summary', async (t) => {
  // B_1-Wi_16 on 3x4x4 -> 5 classes: forward multiply-adds of the Linear layers
  // 48*16 (linear_in) + 16*64 + 64*16 (block) + 16*5 (head) = 2896; 2 FLOPs each, x3 for training.
  const macs = 48 * 16 + 16 * 64 + 64 * 16 + 16 * 5;
  t.equal(forwardMacs(parseArch('B_1-Wi_16'), SHAPE), macs);
  const perSample = 3 * 2 * macs; // 17,376
  t.same(computeFields(10, perSample), { compute_flops: 173_760, compute_pflop: 173_760 / 1e15 });

  const out = tempDir(t);
  const o = smallOptions(out, { epochs: 2, accum: 2 }); // 6 updates of 16 images per epoch
  const s = await train(o, feedsFor(o), quiet);
  const recs = lines(out);
  const steps = recs.filter((r) => r['type'] === 'step');
  t.same(
    steps.map((r) => r['compute_flops']),
    steps.map((_, k) => (k + 1) * 16 * perSample),
    'step k: 16k samples so far',
  );
  t.same(
    steps.map((r) => r['compute_pflop']),
    steps.map((_, k) => ((k + 1) * 16 * perSample) / 1e15),
  );
  const epochs = recs.filter((r) => r['type'] === 'epoch');
  t.same(
    epochs.map((r) => r['compute_flops']),
    [96 * perSample, 192 * perSample],
  );
  t.equal(s.computeFlops, 192 * perSample);
  t.equal(s.computeFlops, 3_336_192);
  t.equal(s.computePflop, 3_336_192 / 1e15);

  // A resumed run counts from where it stopped; a fine-tuning run counts the same way.
  const b = tempDir(t);
  const ob = smallOptions(b, { epochs: 2, maxSteps: 4 });
  await train(ob, feedsFor(ob), quiet);
  const oc = smallOptions(b, { epochs: 2, resume: b });
  const sc = await train(oc, feedsFor(oc), quiet);
  t.equal(sc.samples, 128, 'this invocation trained 8 updates');
  t.equal(sc.computeFlops, 192 * perSample, 'the whole run');
  const resumedSteps = lines(b)
    .filter((r) => r['type'] === 'step')
    .slice(4);
  t.same(
    resumedSteps.map((r) => r['compute_flops']),
    resumedSteps.map((_, k) => (k + 5) * 16 * perSample),
  );

  const f = tempDir(t);
  const of = ftOptions(f, { mode: 'linear' });
  const sf = await train(of, feedsFor(of), quiet);
  t.equal(sf.computeFlops, 96 * perSample, 'linear probe: the paper formula (3 x forward x samples)');
  t.same(
    lines(f)
      .filter((r) => r['type'] === 'step')
      .map((r) => r['compute_flops']),
    [1, 2, 3, 4, 5, 6].map((k) => k * 16 * perSample),
  );
});

t.test('fine-tuning with an eval feed of the new classes', async (t) => {
  const out = tempDir(t);
  const o = ftOptions(out, { mode: 'full' });
  const { images, labels } = syntheticArrays(20, 3, 4, 5, 4);
  const s = await train(o, { train: feedsFor(o).train, val: new MemoryFeed({ images, labels, ...SHAPE, batchSize: 8 }) }, quiet);
  t.match(s.lastEval, { samples: 20 });
});
