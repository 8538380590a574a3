// The assembled models against the float64 reference: forward pass, every parameter's gradient
// of the smoothed cross-entropy by finite differences, PyTorch-style init, state dicts.
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { CheckpointError } from '../../src/model/errors.ts';
import { initParams } from '../../src/model/init.ts';
import { paramLayout } from '../../src/model/layout.ts';
import { Mlp, transpose2d, type HostTensor } from '../../src/model/mlp.ts';
import { batchLoss } from '../../src/train/loss.ts';
import { refForward, refLoss, type RefModel } from './reference.ts';
import { maxAbsDiff, useBackend } from './setup.ts';

function inputs(n: number, d: number, seed: number): Float32Array[] {
  let s = seed;
  const rnd = (): number => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 4 - 2;
  return Array.from({ length: n }, () => Float32Array.from({ length: d }, rnd));
}

function refOf(model: Mlp): RefModel {
  return { kind: model.spec.kind, depth: model.spec.depth, state: model.stateDict() };
}

t.test('transpose2d', async (t) => {
  t.same(Array.from(transpose2d(Float32Array.from([1, 2, 3, 4, 5, 6]), 2, 3)), [1, 4, 2, 5, 3, 6]);
  const big = Float32Array.from({ length: 37 * 45 }, (_, i) => i);
  const tt = transpose2d(transpose2d(big, 37, 45), 45, 37);
  t.same(Array.from(tt), Array.from(big), 'twice is identity across block edges');
});

t.test('init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for Linear, 1/0 for LayerNorm, seeded', async (t) => {
  const layout = paramLayout({ name: 'B_1-Wi_64', kind: 'bottleneck', depth: 1, width: 64, expansion: 4 }, { res: 8, channels: 3, numClasses: 10 });
  const a = initParams(layout, 7);
  const b = initParams(layout, 7);
  const c = initParams(layout, 8);
  for (const e of layout) {
    const v = a.get(e.name)!;
    t.same(Array.from(v), Array.from(b.get(e.name)!), `${e.name} deterministic`);
    if (e.role === 'norm.weight')
      t.ok(
        v.every((x) => x === 1),
        e.name,
      );
    else if (e.role === 'norm.bias')
      t.ok(
        v.every((x) => x === 0),
        e.name,
      );
    else {
      const bound = 1 / Math.sqrt(e.fanIn);
      const max = v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      t.ok(max <= bound && (v.length < 100 || max > 0.9 * bound), `${e.name}: max |w| ${max} vs bound ${bound}`);
      if (v.length > 1000) {
        // Variance of U(-b, b) is b^2/3.
        const variance = v.reduce((s, x) => s + x * x, 0) / v.length;
        t.ok(Math.abs(variance / ((bound * bound) / 3) - 1) < 0.05, `${e.name}: variance ratio ${variance / ((bound * bound) / 3)}`);
      }
      t.notSame(Array.from(v.subarray(0, 8)), Array.from(c.get(e.name)!.subarray(0, 8)), `${e.name} depends on the seed`);
    }
  }
});

for (const backend of ['cpu', 'wasm'] as const) {
  t.test(backend, async (t) => {
    await useBackend(backend);

    for (const arch of ['B_2-Wi_6', 'S_3-Wi_6', 'B_1-Wi_4-Ex_2']) {
      t.test(`${arch}: forward pass equals the float64 reference`, async (t) => {
        const model = new Mlp({ arch, res: 2, channels: 2, numClasses: 3 }, 1);
        // Non-trivial LayerNorm affine parameters, so they are exercised too.
        const state = model.stateDict();
        for (const [k, v] of state)
          if (k.startsWith('layernorms.')) v.data.forEach((_, i) => (v.data[i] = (k.endsWith('weight') ? 1 : 0) + 0.1 * Math.sin(i + k.length)));
        model.loadStateDict(state);
        const xs = inputs(5, 8, 3);
        const out = tf.tidy(() =>
          model
            .forward(
              tf.tensor2d(
                xs.flatMap((r) => Array.from(r)),
                [5, 8],
              ),
            )
            .dataSync(),
        );
        const ref = refForward(refOf(model), xs).flatMap((r) => Array.from(r));
        t.ok(maxAbsDiff(out, ref) < 2e-5, `max diff ${maxAbsDiff(out, ref)}`);
        model.dispose();
      });

      t.test(`${arch}: every gradient matches finite differences of the reference loss`, async (t) => {
        const model = new Mlp({ arch, res: 2, channels: 1, numClasses: 3 }, 2);
        const xs = inputs(4, 4, 5);
        const labels = [0, 2, 1, 2];
        const smoothing = 0.3;
        const { grads } = tf.tidy(() =>
          tf.variableGrads(
            () =>
              batchLoss(
                model.forward(
                  tf.tensor2d(
                    xs.flatMap((r) => Array.from(r)),
                    [4, 4],
                  ),
                ),
                tf.tensor1d(labels, 'int32'),
                smoothing,
              ),
            model.variables(),
          ),
        );
        const state = model.stateDict();
        const ref = refOf(model);
        const loss = (): number => refLoss(refForward(ref, xs), labels, smoothing);
        const h = 1e-6;
        let worst = 0;
        for (const p of model.params) {
          const host = state.get(p.entry.name)!;
          const tfGrad = grads[p.variable.name]!.dataSync();
          // tfjs grads are in tfjs layout ([in, out] for Linear weights): bring them to PyTorch's.
          const g = p.entry.role === 'linear.weight' ? transpose2d(tfGrad as Float32Array, p.tfShape[0]!, p.tfShape[1]!) : tfGrad;
          const hostF64 = Float64Array.from(host.data);
          const probe: HostTensor = { shape: host.shape, data: hostF64 as unknown as Float32Array };
          ref.state.set(p.entry.name, probe);
          for (let i = 0; i < hostF64.length; i++) {
            const v = hostF64[i]!;
            hostF64[i] = v + h;
            const up = loss();
            hostF64[i] = v - h;
            const dn = loss();
            hostF64[i] = v;
            worst = Math.max(worst, Math.abs((up - dn) / (2 * h) - g[i]!));
          }
          ref.state.set(p.entry.name, host);
        }
        t.ok(worst < 5e-5, `max |tf - finite difference| = ${worst}`);
        tf.dispose(grads);
        model.dispose();
      });
    }

    t.test('state dict: PyTorch layout out, same numbers back in; strict names and shapes', async (t) => {
      const a = new Mlp({ arch: 'B_1-Wi_4', res: 1, channels: 3, numClasses: 2 }, 3);
      const b = new Mlp({ arch: 'B_1-Wi_4', res: 1, channels: 3, numClasses: 2 }, 4);
      const sa = a.stateDict();
      t.same(sa.get('linear_in.weight')!.shape, [4, 3], 'Linear weight is [out, in]');
      // linear_in.weight[o][i] multiplies input i into output o: check against the tfjs [in, out] variable.
      const tfw = a.params[0]!.variable.arraySync() as number[][];
      t.equal(sa.get('linear_in.weight')!.data[1 * 3 + 2], Math.fround(tfw[2]![1]!));
      b.loadStateDict(sa);
      for (const [k, v] of b.stateDict()) t.same(Array.from(v.data), Array.from(sa.get(k)!.data), k);
      const missing = new Map(sa);
      missing.delete('layernorms.0.bias');
      t.throws(() => b.loadStateDict(missing), CheckpointError);
      const extra = new Map(sa).set('blocks.1.block.0.weight', { shape: [16, 4], data: new Float32Array(64) });
      t.throws(() => b.loadStateDict(extra), CheckpointError);
      const wrong = new Map(sa).set('linear_in.weight', { shape: [3, 4], data: new Float32Array(12) });
      t.throws(() => b.loadStateDict(wrong), /shape \[3,4\]/);
      a.dispose();
      b.dispose();
    });

    t.test('input width is checked', async (t) => {
      const m = new Mlp({ arch: 'S_1-Wi_4', res: 2, channels: 3, numClasses: 2 });
      t.equal(m.inputDim, 12);
      t.throws(() => m.forward(tf.zeros([1, 11]) as tf.Tensor2D), RangeError);
      t.equal(m.numParams, 12 * 4 + 4 + 4 * 2 + 2, 'S_1 is linear_in + linear_out');
      m.dispose();
    });
  });
}

t.test('cpu and wasm agree on a forward pass', async (t) => {
  const xs = inputs(16, 48, 9).flatMap((r) => Array.from(r));
  const run = async (b: 'cpu' | 'wasm'): Promise<Float32Array> => {
    await useBackend(b);
    const m = new Mlp({ arch: 'B_2-Wi_32', res: 4, channels: 3, numClasses: 7 }, 11);
    const out = tf.tidy(() => m.forward(tf.tensor2d(xs, [16, 48])).dataSync() as Float32Array);
    m.dispose();
    return out;
  };
  const a = await run('cpu');
  const b = await run('wasm');
  t.ok(maxAbsDiff(a, b) < 1e-5, `${maxAbsDiff(a, b)}`);
});
