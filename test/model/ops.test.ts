// The model's building blocks against values worked out independently: GELU at points (erf
// values from Python's math.erf), LayerNorm by hand, gradients by finite differences.
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { columnSum, dense, gelu, layerNorm, softCrossEntropy } from '../../src/model/ops.ts';
import { erf, geluRef } from './reference.ts';
import { maxAbsDiff, useBackend } from './setup.ts';

// x, GELU(x) = 0.5 x (1 + erf(x / sqrt 2)), GELU'(x): from Python's math.erf.
const GELU_POINTS: [number, number, number][] = [
  [-4, -0.00012668496733247991, -0.0005036496612264215],
  [-3, -0.00404969409489031, -0.011945647204183918],
  [-2, -0.04550026389635842, -0.08523180107819692],
  [-1, -0.15865525393145707, -0.08331547058768629],
  [-0.5, -0.15426876936299344, 0.13250487534383712],
  [0, 0, 0.5],
  [0.5, 0.34573123063700656, 0.8674951246561629],
  [1, 0.8413447460685429, 1.0833154705876864],
  [2, 1.9544997361036416, 1.085231801078197],
  [3, 2.99595030590511, 1.011945647204184],
];

for (const backend of ['cpu', 'wasm'] as const) {
  t.test(`${backend}`, async (t) => {
    await useBackend(backend);

    t.test('the float64 reference erf agrees with Python', async (t) => {
      for (const [x, g] of GELU_POINTS) t.ok(Math.abs(geluRef(x) - g) < 1e-13, `gelu(${x})`);
      t.ok(Math.abs(erf(3.5) - 0.9999992569016276) < 1e-15);
    });

    t.test('GELU is the exact (erf) form, value and gradient', async (t) => {
      const xs = GELU_POINTS.map((p) => p[0]);
      const x = tf.tensor1d(xs);
      const y = gelu(x).dataSync();
      const dy = tf
        .grad((v: tf.Tensor) => tf.sum(gelu(v)))(x)
        .dataSync();
      GELU_POINTS.forEach(([xv, g, d], i) => {
        // float32 has ~7 significant digits; the tanh approximation would be off by up to ~1e-3.
        t.ok(Math.abs(y[i]! - g) <= 2e-7 + 2e-6 * Math.abs(g), `GELU(${xv}) = ${y[i]} vs ${g}`);
        t.ok(Math.abs(dy[i]! - d) <= 1e-6, `GELU'(${xv}) = ${dy[i]} vs ${d}`);
      });
      tf.dispose(x);
    });

    t.test('LayerNorm by hand: [1,2,3,4], weight [1,2,1,1], bias [0,0,1,0]', async (t) => {
      // mean 2.5, biased variance 1.25, 1/sqrt(1.25 + 1e-5)
      const r = 1 / Math.sqrt(1.25 + 1e-5);
      const expect = [-1.5 * r, -0.5 * r * 2, 0.5 * r + 1, 1.5 * r];
      const out = layerNorm(tf.tensor2d([[1, 2, 3, 4]]), tf.tensor1d([1, 2, 1, 1]), tf.tensor1d([0, 0, 1, 0])).dataSync();
      t.ok(maxAbsDiff(out, expect) < 1e-6, `${Array.from(out)} vs ${expect}`);
      const flat = layerNorm(tf.tensor2d([[7, 7, 7]]), tf.ones([3]) as tf.Tensor1D, tf.zeros([3]) as tf.Tensor1D).dataSync();
      t.same(Array.from(flat), [0, 0, 0], 'constant rows normalise to 0 (eps keeps it finite)');
    });

    t.test('LayerNorm gradients match finite differences', async (t) => {
      const xv = [
        [0.3, -1.2, 2.0, 0.7, -0.1],
        [1.5, 1.4, -0.3, 0.0, 0.9],
      ];
      const wv = [1.1, 0.9, -0.5, 1.3, 0.2];
      const bv = [0.1, -0.2, 0.3, 0, 0.05];
      const gv = [
        [0.4, -0.3, 0.2, 1.0, -0.7],
        [0.25, 0.5, -1.0, 0.3, 0.1],
      ];
      // Objective sum(g * LN(x)) in float64, differentiated numerically.
      const f = (x: number[][], w: number[], b: number[]): number =>
        x.reduce((acc, row, i) => {
          const n = row.length;
          const mean = row.reduce((s, v) => s + v, 0) / n;
          const vr = row.reduce((s, v) => s + (v - mean) ** 2, 0) / n;
          return acc + row.reduce((s, v, j) => s + gv[i]![j]! * (((v - mean) / Math.sqrt(vr + 1e-5)) * w[j]! + b[j]!), 0);
        }, 0);
      const h = 1e-6;
      const numX = xv.flatMap((row, i) =>
        row.map((_, j) => {
          const up = xv.map((r) => [...r]);
          up[i]![j]! += h;
          const dn = xv.map((r) => [...r]);
          dn[i]![j]! -= h;
          return (f(up, wv, bv) - f(dn, wv, bv)) / (2 * h);
        }),
      );
      const numW = wv.map((_, j) => {
        const up = [...wv];
        up[j]! += h;
        const dn = [...wv];
        dn[j]! -= h;
        return (f(xv, up, bv) - f(xv, dn, bv)) / (2 * h);
      });
      const numB = bv.map((_, j) => {
        const up = [...bv];
        up[j]! += h;
        const dn = [...bv];
        dn[j]! -= h;
        return (f(xv, wv, up) - f(xv, wv, dn)) / (2 * h);
      });
      const [gx, gw, gb] = tf.grads((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(layerNorm(x as tf.Tensor2D, w as tf.Tensor1D, b as tf.Tensor1D), tf.tensor2d(gv))),
      )([tf.tensor2d(xv), tf.tensor1d(wv), tf.tensor1d(bv)]);
      t.ok(maxAbsDiff(gx!.dataSync(), numX) < 2e-5, `dx ${maxAbsDiff(gx!.dataSync(), numX)}`);
      t.ok(maxAbsDiff(gw!.dataSync(), numW) < 2e-5, 'dweight');
      t.ok(maxAbsDiff(gb!.dataSync(), numB) < 2e-5, 'dbias');
    });

    t.test('dense: y = xW + b and its gradients (W stored [in, out])', async (t) => {
      const x = tf.tensor2d([
        [1, 2],
        [3, -1],
        [0.5, 0],
      ]);
      const w = tf.tensor2d([
        [1, 0, -1],
        [2, 1, 0.5],
      ]);
      const b = tf.tensor1d([0.1, 0.2, 0.3]);
      t.same(
        Array.from(dense(x, w, b).dataSync()).map((v) => Math.round(v * 1e6) / 1e6),
        [5.1, 2.2, 0.3, 1.1, -0.8, -3.2, 0.6, 0.2, -0.2],
      );
      const g = tf.tensor2d([
        [1, 0, 2],
        [0, 1, 0],
        [1, 1, 1],
      ]);
      const [gx, gw, gb] = tf.grads((xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
        tf.sum(tf.mul(dense(xx as tf.Tensor2D, ww as tf.Tensor2D, bb as tf.Tensor1D), g)),
      )([x, w, b]);
      // dW = x^T g, db = column sums of g, dx = g W^T
      t.same(Array.from(gw!.dataSync()), [1.5, 3.5, 2.5, 2, -1, 4], 'dW');
      t.same(Array.from(gb!.dataSync()), [2, 2, 3], 'db');
      t.same(Array.from(gx!.dataSync()), [-1, 3, 0, 1, 0, 3.5], 'dx');
      // For data inputs x is not an op input at all: same dW and db, and x is off the tape.
      const [gw2, gb2] = tf.grads((ww: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(dense(x, ww as tf.Tensor2D, bb as tf.Tensor1D, { inputGrad: false }), g)))([
        w,
        b,
      ]);
      t.same(Array.from(gw2!.dataSync()), [1.5, 3.5, 2.5, 2, -1, 4], 'dW without input gradient');
      t.same(Array.from(gb2!.dataSync()), [2, 2, 3]);
      t.throws(() => tf.grad((xx: tf.Tensor) => tf.sum(dense(xx as tf.Tensor2D, w, b, { inputGrad: false })))(x), 'x gets no gradient');
    });

    t.test('columnSum', async (t) => {
      t.same(
        Array.from(
          columnSum(
            tf.tensor2d([
              [1, 2, 3],
              [4, 5, 6],
            ]),
          ).dataSync(),
        ),
        [5, 7, 9],
      );
    });

    t.test('soft cross-entropy: value and gradient (softmax - target) / n', async (t) => {
      const z = [
        [2, 1, 0],
        [0, 0, 3],
      ];
      const target = [
        [0.8, 0.1, 0.1],
        [0.05, 0.05, 0.9],
      ];
      const logits = tf.tensor2d(z);
      const ref = z.map((row, i) => {
        const lse = Math.log(row.reduce((s, v) => s + Math.exp(v), 0));
        return { loss: -row.reduce((s, v, j) => s + target[i]![j]! * (v - lse), 0), grad: row.map((v, j) => (Math.exp(v - lse) - target[i]![j]!) / 2) };
      });
      const loss = softCrossEntropy(logits, tf.tensor2d(target)).dataSync()[0]!;
      t.ok(Math.abs(loss - (ref[0]!.loss + ref[1]!.loss) / 2) < 1e-6, `${loss}`);
      const g = tf
        .grad((l: tf.Tensor) => softCrossEntropy(l as tf.Tensor2D, tf.tensor2d(target)))(logits)
        .dataSync();
      t.ok(
        maxAbsDiff(
          g,
          ref.flatMap((r) => r.grad),
        ) < 1e-6,
      );
    });
  });
}
