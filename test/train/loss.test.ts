// Label smoothing, MixUp and top-k against hand-computed numbers (checked with PyTorch's
// CrossEntropyLoss(label_smoothing=...)).
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { Rng } from '../../src/shared/random.ts';
import { batchLoss, hitCounts, softTargets } from '../../src/train/loss.ts';
import { applyMix, drawMix } from '../../src/train/mixup.ts';
import { maxAbsDiff, useBackend } from '../model/setup.ts';

await useBackend('wasm');

t.test('label smoothing 0.3 on logits [2, 1, 0], label 0', async (t) => {
  // lse = log(e^2 + e + 1) = 2.4076059644; logp = [-0.4076, -1.4076, -2.4076]
  // loss = -(0.7 * logp[0] + 0.3 * mean(logp)) = 0.2853242 + 0.4222818
  const loss = batchLoss(tf.tensor2d([[2, 1, 0]]), tf.tensor1d([0], 'int32'), 0.3).dataSync()[0]!;
  t.ok(Math.abs(loss - 0.7076058983802795) < 1e-6, `${loss}`);
  const plain = batchLoss(tf.tensor2d([[2, 1, 0]]), tf.tensor1d([0], 'int32'), 0).dataSync()[0]!;
  t.ok(Math.abs(plain - 0.40760596444) < 1e-6, 'no smoothing: -log softmax');
});

t.test('soft targets: (1-e)*onehot + e/C, mixed linearly', async (t) => {
  const y = tf.tensor1d([1, 0], 'int32');
  t.ok(maxAbsDiff(softTargets(y, 4, 0.2).dataSync(), [0.05, 0.85, 0.05, 0.05, 0.85, 0.05, 0.05, 0.05]) < 1e-7);
  const mixed = softTargets(y, 4, 0.2, { lambda: 0.25, partnerLabels: tf.tensor1d([0, 1], 'int32') }).dataSync();
  t.ok(maxAbsDiff(mixed, [0.65, 0.25, 0.05, 0.05, 0.25, 0.65, 0.05, 0.05]) < 1e-7, `${Array.from(mixed)}`);
});

t.test('MixUp loss = l*CE(y) + (1-l)*CE(y_partner), smoothing 0.1', async (t) => {
  const logits = tf.tensor2d([
    [2, 1, 0],
    [0.5, 0, -1],
  ]);
  const labels = tf.tensor1d([0, 2], 'int32');
  // partner = reversed batch -> partner labels [2, 0]; value from PyTorch:
  // 0.25 * CE_0.1(z, [0, 2]) + 0.75 * CE_0.1(z, [2, 0]) = 1.43295156955719
  const loss = batchLoss(logits, labels, 0.1, { lambda: 0.25, partnerLabels: tf.tensor1d([2, 0], 'int32') }).dataSync()[0]!;
  t.ok(Math.abs(loss - 1.43295156955719) < 1e-6, `${loss}`);
});

t.test('mixing images on the device: reversed batch or seeded permutation', async (t) => {
  const rng = new Rng(3);
  const d = drawMix(rng, 0.8, 3, 'reverse');
  t.same(Array.from(d.partner), [2, 1, 0]);
  t.ok(d.lambda > 0 && d.lambda < 1);
  const x = tf.tensor2d([
    [1, 1],
    [2, 2],
    [4, 4],
  ]);
  const { images, partnerLabels } = applyMix(x, tf.tensor1d([7, 8, 9], 'int32'), { lambda: 0.25, partner: Int32Array.from([2, 1, 0]) });
  t.same(Array.from(images.dataSync()), [3.25, 3.25, 2, 2, 1.75, 1.75]);
  t.same(Array.from(partnerLabels.dataSync()), [9, 8, 7]);
  const p = drawMix(new Rng(4), 0.8, 10, 'permute');
  t.same(
    [...p.partner].sort((a, b) => a - b),
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    'a permutation',
  );
  t.same(Array.from(drawMix(new Rng(4), 0.8, 10, 'permute').partner), Array.from(p.partner), 'seeded');
});

t.test('Beta(a, a) draws: mean 1/2, variance 1/(4(2a+1))', async (t) => {
  const rng = new Rng(11);
  for (const a of [0.2, 0.8, 2]) {
    const n = 20000;
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < n; i++) {
      const x = rng.beta(a, a);
      s += x;
      s2 += x * x;
    }
    const mean = s / n;
    const variance = s2 / n - mean * mean;
    t.ok(Math.abs(mean - 0.5) < 0.01, `a=${a}: mean ${mean}`);
    t.ok(Math.abs(variance / (1 / (4 * (2 * a + 1))) - 1) < 0.05, `a=${a}: variance ${variance}`);
  }
});

t.test('top-1 / top-5 hits, and "either label" under MixUp', async (t) => {
  const logits = tf.tensor2d([
    [9, 1, 2, 3, 4, 5, 0],
    [0, 1, 2, 3, 4, 5, 9],
    [5, 4, 3, 2, 1, 0, -1],
  ]);
  const h = hitCounts(logits, tf.tensor1d([0, 1, 6], 'int32'));
  // row 0: label 0 is top-1; row 1: label 1 ranks 6th (not top-5); row 2: label 6 is last
  t.equal(h.top1.dataSync()[0], 1);
  t.equal(h.top5.dataSync()[0], 1);
  const m = hitCounts(logits, tf.tensor1d([0, 1, 6], 'int32'), tf.tensor1d([5, 6, 2], 'int32'));
  t.equal(m.top1.dataSync()[0], 2, 'row 1 partner label 6 is top-1');
  t.equal(m.top5.dataSync()[0], 3, 'row 2 partner label 2 is in the top 5');
  const few = hitCounts(tf.tensor2d([[1, 3, 2]]), tf.tensor1d([0], 'int32'));
  t.equal(few.top5.dataSync()[0], 1, 'top-5 with 3 classes means top-3');
});
