// The trainer fed uint8 batches: training (MixUp after the on-device normalisation), evaluation,
// prediction and TTA give exactly what the same data as normalised float32 batches gives.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Mlp } from '../../src/model/mlp.ts';
import { readSafetensorsFile } from '../../src/model/safetensors.ts';
import { Rng } from '../../src/shared/random.ts';
import type { Batch, DataFeed } from '../../src/shared/data-feed.ts';
import { evaluate } from '../../src/train/evaluate.ts';
import { defaultFrameDtype, resolveFrameDtype } from '../../src/train/frame-dtype.ts';
import { MemoryFeed } from '../../src/train/memory-feed.ts';
import { pixelScaleBias } from '../../src/train/normalize-batch.ts';
import { predict, predictTta } from '../../src/train/predict.ts';
import { train } from '../../src/train/train.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';
import { SHAPE, smallOptions } from './helpers.ts';

const quiet = { log: () => {}, progress: null };
const STATS = { mean: [120.5, 99, 140.25], std: [60, 55.5, 70.125] };
const D = SHAPE.channels * SHAPE.res * SHAPE.res;

/** Pixels whose class shows in their brightness, and the float32 values normalisation gives them. */
function data(n: number, seed: number): { pixels: Uint8Array; floats: Float32Array; labels: Int32Array } {
  const rng = new Rng(seed, 0x08);
  const pixels = new Uint8Array(n * D);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = rng.below(SHAPE.numClasses);
    for (let j = 0; j < D; j++) pixels[i * D + j] = Math.min(255, labels[i]! * 40 + (rng.nextUint32() & 63));
  }
  const { scale, bias } = pixelScaleBias(STATS.mean, STATS.std);
  const plane = SHAPE.res * SHAPE.res;
  const floats = Float32Array.from(pixels, (v, i) => {
    const c = Math.floor((i % D) / plane);
    return Math.fround(Math.fround(v * scale[c]!) + bias[c]!);
  });
  return { pixels, floats, labels };
}

const TRAIN = data(96, 1);
const VAL = data(40, 2);

function feeds(kind: 'uint8' | 'float32', batchSize: number, seed: number): { train: DataFeed; val: DataFeed } {
  const images = (d: typeof TRAIN) => (kind === 'uint8' ? { images: d.pixels, pixelStats: STATS } : { images: d.floats });
  return {
    train: new MemoryFeed({ ...images(TRAIN), labels: TRAIN.labels, ...SHAPE, batchSize, shuffle: true, seed }),
    val: new MemoryFeed({ ...images(VAL), labels: VAL.labels, ...SHAPE, batchSize: 16 }),
  };
}

function weights(dir: string): Map<string, string> {
  const m = readSafetensorsFile(join(dir, 'model.safetensors')).tensors;
  return new Map([...m].map(([k, v]) => [k, Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).toString('hex')]));
}

t.test('frame dtype defaults by backend name', async (t) => {
  for (const gpu of ['webgpu', 'tfjs-node-gpu', 'webgl']) t.equal(defaultFrameDtype(gpu), 'uint8', gpu);
  for (const cpu of ['wasm', 'cpu', 'tfjs-node']) t.equal(defaultFrameDtype(cpu), 'float32', cpu);
  t.equal(resolveFrameDtype('auto', 'webgpu'), 'uint8');
  t.equal(resolveFrameDtype(undefined, 'wasm'), 'float32');
  t.equal(resolveFrameDtype('uint8', 'cpu'), 'uint8', 'an explicit choice wins');
  t.equal(resolveFrameDtype('float32', 'webgpu'), 'float32');
});

for (const backend of ['cpu', 'wasm'] as const) {
  t.test(`${backend}: training on uint8 batches (MixUp, smoothing, clipping) ends with the float32 run's weights and metrics`, async (t) => {
    await useBackend(backend);
    const runs: Record<string, { out: string; loss: number | null; val: unknown }> = {};
    for (const kind of ['float32', 'uint8'] as const) {
      const out = tempDir(t);
      const o = smallOptions(out, { epochs: 2 });
      t.equal(o.mixup, 0.8, 'MixUp on');
      const s = await train(o, feeds(kind, o.batchSize, o.seed), quiet);
      runs[kind] = { out, loss: s.lastTrainLoss, val: s.lastEval && { loss: s.lastEval.loss, top1: s.lastEval.top1 } };
    }
    t.equal(runs['uint8']!.loss, runs['float32']!.loss, 'same last train loss');
    t.same(runs['uint8']!.val, runs['float32']!.val, 'same validation loss and top-1');
    t.same(weights(runs['uint8']!.out), weights(runs['float32']!.out), 'bit-identical final weights');
    const metrics = (out: string) =>
      readFileSync(join(out, 'metrics.jsonl'), 'utf8')
        .split('\n')
        .filter((l) => l.includes('"type":"step"'))
        .map((l) => (JSON.parse(l) as { loss: number }).loss);
    t.same(metrics(runs['uint8']!.out), metrics(runs['float32']!.out), 'every step loss');
  });

  t.test(`${backend}: evaluate, predict and TTA take uint8 batches`, async (t) => {
    await useBackend(backend);
    const model = new Mlp({ arch: 'B_1-Wi_16', ...SHAPE }, 4);
    t.teardown(() => model.dispose());
    const u = feeds('uint8', 16, 0).val;
    const f = feeds('float32', 16, 0).val;
    t.same(await stripSeconds(evaluate(model, u)), await stripSeconds(evaluate(model, f)), 'evaluate: same loss, top-1, top-5');
    const pu = await predict(model, u);
    const pf = await predict(model, f);
    t.same([...pu.pred], [...pf.pred]);
    t.equal(pu.loss, pf.loss);
    // TTA over an eval-order feed: every view here is the same images, so the average is one view's.
    const tu = await predictTta(model, u, 2);
    const tf32 = await predictTta(model, f, 2);
    t.same([...tu.probs], [...tf32.probs]);
    t.equal(tu.top1, tf32.top1);
  });
}

async function stripSeconds<T extends { seconds: number }>(p: Promise<T>): Promise<Omit<T, 'seconds'>> {
  const { seconds: _s, ...rest } = await p;
  return rest;
}

t.test('MemoryFeed refuses uint8 images without statistics and statistics without uint8', async (t) => {
  t.throws(() => new MemoryFeed({ images: TRAIN.pixels, labels: TRAIN.labels, ...SHAPE, batchSize: 8 }), /pixelStats/);
  t.throws(() => new MemoryFeed({ images: TRAIN.floats, pixelStats: STATS, labels: TRAIN.labels, ...SHAPE, batchSize: 8 }), /pixelStats/);
  const b: Batch[] = [];
  for await (const x of new MemoryFeed({ images: TRAIN.pixels, pixelStats: STATS, labels: TRAIN.labels, ...SHAPE, batchSize: 8, shuffle: true }).epoch(0))
    b.push(x);
  t.ok(b[0]!.images instanceof Uint8Array && b[0]!.pixelStats === STATS, 'shuffled uint8 batches keep their type and statistics');
});
