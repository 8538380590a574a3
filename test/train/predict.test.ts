// Evaluation with per-sample results: the centre pass, test-time augmentation (averaged softmax
// probabilities over views, against a mean computed here in float64) on a deterministic
// multi-view feed, top-k of probability rows, and ImageNet ReaL scoring against counts by hand.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { Mlp } from '../../src/model/mlp.ts';
import { Rng } from '../../src/shared/random.ts';
import type { Batch, DataFeed, DatasetInfo } from '../../src/shared/data-feed.ts';
import { evaluate } from '../../src/train/evaluate.ts';
import { MemoryFeed, syntheticArrays } from '../../src/train/memory-feed.ts';
import { EvalError, keyPosition, predict, predictTta, readRealLabels, scoreProbabilities, scoreReal } from '../../src/train/predict.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';

await useBackend('cpu');

const C = 6;
const D = 3 * 4 * 4;
const N = 23;
const BASE = syntheticArrays(N, 3, 4, C, 7);
/** Keys out of order, as a val set sharded in some other order would give them. */
const KEYS = Array.from({ length: N }, (_, i) => String((i * 7) % N).padStart(9, '0'));

/** View v of sample i: the base image plus noise drawn from (v, i) - deterministic per view. */
function view(v: number, i: number): Float32Array {
  const rng = new Rng(v, i, 99);
  return Float32Array.from(BASE.images.subarray(i * D, (i + 1) * D), (x) => x + 0.7 * rng.normal());
}

/** An eval-order feed whose epoch v yields view v of every sample, with keys, like the loader's TTA mode. */
class MultiViewFeed implements DataFeed {
  readonly info: DatasetInfo = { numSamples: N, numClasses: C, classes: [], channels: 3, res: 4 };
  epochsRead: number[] = [];
  constructor(private readonly batch: number) {}
  stepsPerEpoch(): number {
    return Math.ceil(N / this.batch);
  }
  epoch(e: number): AsyncIterable<Batch & { keys: string[] }> {
    this.epochsRead.push(e);
    const b = this.batch;
    return {
      async *[Symbol.asyncIterator]() {
        for (let s = 0; s * b < N; s++) {
          const n = Math.min(b, N - s * b);
          const images = new Float32Array(n * D);
          for (let r = 0; r < n; r++) images.set(view(e, s * b + r), r * D);
          yield {
            epoch: e,
            step: s,
            n,
            channels: 3,
            height: 4,
            width: 4,
            images,
            labels: BASE.labels.slice(s * b, s * b + n),
            keys: KEYS.slice(s * b, s * b + n),
            release: () => {},
          };
        }
      },
    };
  }
  async close(): Promise<void> {}
}

function softmax64(logits: ArrayLike<number>): number[] {
  const m = Math.max(...Array.from(logits));
  const e = Array.from(logits, (z) => Math.exp(z - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

t.test("TTA: the averaged probabilities are the mean of the views' softmax, computed by hand", async (t) => {
  const model = new Mlp({ arch: 'B_1-Wi_8', res: 4, channels: 3, numClasses: C }, 5);
  t.teardown(() => model.dispose());
  const views = 4;
  const feed = new MultiViewFeed(5);
  const before = tf.memory().numTensors;
  const r = await predictTta(model, feed, views);
  t.equal(tf.memory().numTensors, before, 'no tensor left behind');
  t.same(feed.epochsRead, [0, 1, 2, 3], 'view v = epoch v');
  t.match(r, { views, samples: N });
  t.same(r.keys, KEYS, 'keys in sample order');
  t.same(Array.from(r.labels), Array.from(BASE.labels));

  const mean = new Float64Array(N * C);
  for (let v = 0; v < views; v++) {
    for (let i = 0; i < N; i++) {
      const z = tf.tidy(() => model.forward(tf.tensor2d(view(v, i), [1, D])).dataSync());
      softmax64(z).forEach((p, c) => (mean[i * C + c] = mean[i * C + c]! + p / views));
    }
  }
  let worst = 0;
  for (let k = 0; k < mean.length; k++) worst = Math.max(worst, Math.abs(r.probs[k]! - mean[k]!));
  t.ok(worst < 2e-6, `averaged probabilities match (worst ${worst})`);
  for (let i = 0; i < N; i++) t.ok(Math.abs(r.probs.subarray(i * C, (i + 1) * C).reduce((a, b) => a + b, 0) - 1) < 1e-5, `row ${i} sums to 1`);

  // Top-1 / top-5 / loss of the average, by hand.
  let h1 = 0;
  let h5 = 0;
  let nll = 0;
  for (let i = 0; i < N; i++) {
    const row = Array.from(mean.subarray(i * C, (i + 1) * C));
    const y = BASE.labels[i]!;
    const order = row
      .map((p, c) => [p, c] as const)
      .sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .map(([, c]) => c);
    if (order[0] === y) h1++;
    if (order.slice(0, 5).includes(y)) h5++;
    nll -= Math.log(row[y]!);
    t.equal(r.pred[i], order[0], `sample ${i}: top-1 of the average`);
  }
  t.equal(r.top1, (100 * h1) / N);
  t.equal(r.top5, (100 * h5) / N);
  t.ok(Math.abs(r.loss - nll / N) < 1e-5, `loss ${r.loss} vs ${nll / N}`);

  // One view of TTA is that view's plain softmax; views differ, so averaging does something.
  const one = await predictTta(model, new MultiViewFeed(23), 1);
  t.not(Array.from(one.probs).join(), Array.from(r.probs).join());
});

t.test('TTA refuses views that list other samples', async (t) => {
  const model = new Mlp({ arch: 'B_1-Wi_8', res: 4, channels: 3, numClasses: C }, 5);
  t.teardown(() => model.dispose());
  const shuffled = new MemoryFeed({ ...BASE, channels: 3, res: 4, numClasses: C, batchSize: 23, shuffle: true, dropLast: false });
  await t.rejects(predictTta(model, shuffled, 2), /view 1 has a different sample at position \d+: the feed must be in eval \(sequential\) order/);
  await t.rejects(predictTta(model, shuffled, 0), RangeError);
});

t.test('predict: loss and accuracy as evaluate(), plus top-1 classes and keys', async (t) => {
  const model = new Mlp({ arch: 'B_1-Wi_8', res: 4, channels: 3, numClasses: C }, 6);
  t.teardown(() => model.dispose());
  const feed = new MemoryFeed({ ...BASE, channels: 3, res: 4, numClasses: C, batchSize: 5 });
  const p = await predict(model, feed);
  const e = await evaluate(model, feed);
  t.equal(p.samples, N);
  t.ok(Math.abs(p.loss - e.loss) < 1e-6);
  t.equal(p.top1, e.top1);
  t.equal(p.top5, e.top5);
  t.equal(p.keys, null, 'MemoryFeed batches carry no keys');
  const logits = tf.tidy(() =>
    model
      .forward(tf.tensor2d(BASE.images, [N, D]))
      .argMax(1)
      .dataSync(),
  );
  t.same(Array.from(p.pred), Array.from(logits));
  t.same((await predict(model, new MultiViewFeed(4))).keys, KEYS);
});

t.test('scoreProbabilities: ties rank the lower class first; top-5 capped at the class count', async (t) => {
  const probs = Float32Array.from([
    0.1,
    0.4,
    0.4,
    0.1, // label 2: tied with class 1, which ranks first -> top-1 miss
    0.4,
    0.4,
    0.1,
    0.1, // label 0: tied with class 1, ranks first -> hit
    0.7,
    0.1,
    0.1,
    0.1, // label 3: rank 3 -> top-5 (capped at 4) hit
  ]);
  const r = scoreProbabilities(probs, 4, Int32Array.from([2, 0, 3]));
  t.same(Array.from(r.pred), [1, 0, 0]);
  t.equal(r.top1, 100 / 3);
  t.equal(r.top5, 100);
  t.ok(Math.abs(r.loss - -(Math.log(0.4) + Math.log(0.4) + Math.log(0.1)) / 3) < 1e-6);
});

t.test('ReaL: right if the top-1 class is in real[key], empty lists left out; counts by hand', async (t) => {
  // real.json: entry K for the image at sorted position K.
  const real = [[3], [1, 2], [], [0], [5, 4], [], [2]];
  const keys = ['000000004', '000000001', '000000002', '000000000', '000000006', '000000005', '000000003'];
  const pred = Int32Array.from([4, 2, 1, 3, 2, 0, 0]);
  // key 4: [5,4] has 4, right; key 1: [1,2] has 2, right; key 2: [], left out; key 0: [3] has 3,
  // right; key 6: [2] has 2, right; key 5: [], left out; key 3: [0] has 0, right.
  t.same(scoreReal(real, keys, pred), { right: 5, wrong: 0, leftOut: 2, scored: 5, top1: 100 });
  const pred2 = Int32Array.from([5, 0, 1, 3, 1, 0, 1]);
  // key 4 [5,4] 5 right; key 1 [1,2] 0 wrong; key 2 left out; key 0 [3] 3 right; key 6 [2] 1 wrong;
  // key 5 left out; key 3 [0] 1 wrong.
  t.same(scoreReal(real, keys, pred2), { right: 2, wrong: 3, leftOut: 2, scored: 5, top1: 40 });
  t.throws(() => scoreReal(real, ['000000007'], Int32Array.from([0])), /position 7, but the ReaL file has 7 entries/);
  t.throws(() => scoreReal(real, ['abc'], Int32Array.from([0])), EvalError);
  t.equal(keyPosition('000012345'), 12345);
  const allEmpty = scoreReal([[]], ['000000000'], Int32Array.from([0]));
  t.match(allEmpty, { scored: 0, leftOut: 1 });
  t.ok(Number.isNaN(allEmpty.top1));
});

t.test('readRealLabels: the official list-of-lists format, with clear errors', async (t) => {
  const dir = tempDir(t);
  const good = join(dir, 'real.json');
  writeFileSync(good, JSON.stringify([[1], [], [2, 3]]));
  t.same(readRealLabels(good), [[1], [], [2, 3]]);
  const notList = join(dir, 'obj.json');
  writeFileSync(notList, JSON.stringify({ a: 1 }));
  t.throws(() => readRealLabels(notList), /must be a JSON list/);
  const badEntry = join(dir, 'bad.json');
  writeFileSync(badEntry, JSON.stringify([[1], [1.5]]));
  t.throws(() => readRealLabels(badEntry), /entry 1 is not a list of class indices/);
  t.throws(() => readRealLabels(join(dir, 'missing.json')), /cannot read ReaL labels/);
});
