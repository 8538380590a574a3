// Each optimizer's update rule over two steps with weight decay, against numbers worked by hand
// (Lion, SGD) or produced by PyTorch 1.13 in float64 (AdamW, SGD, clip_grad_norm_), and LAMB
// against a float64 transcription of its definition - with Lion's fused one-pass kernel (cpu,
// wasm) and with the tf-ops version other backends use.
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { clipByGlobalNorm, globalNorm } from '../../src/train/clip.ts';
import { fusedUpdatesActive, setFusedUpdates } from '../../src/train/optim/fused.ts';
import { createOptimizer, OptimizerStateError, type OptimizerName } from '../../src/train/optim/index.ts';
import { maxAbsDiff, useBackend } from '../model/setup.ts';

const P0 = [1, -2, 0.5];
const G1 = [0.1, -0.3, 0];
const G2 = [-0.2, 0.4, 0.05];
const LR = 0.1;
const WD = 0.01;

function twoSteps(name: OptimizerName, extra: { nesterov?: boolean } = {}) {
  const p = tf.variable(tf.tensor1d(P0), true, `p-${name}-${Math.random()}`);
  const opt = createOptimizer(name, [{ name: 'w', variable: p }], { weightDecay: WD, ...extra });
  const after: number[][] = [];
  for (const g of [G1, G2]) {
    const gt = tf.tensor1d(g);
    opt.apply([gt], LR);
    gt.dispose();
    after.push(Array.from(p.dataSync()));
  }
  const state = new Map([...opt.state()].map(([k, v]) => [k, Array.from(v.dataSync())]));
  const steps = opt.steps;
  opt.dispose();
  p.dispose();
  return { after, state, steps };
}

const close = (a: number[], b: number[], tol = 1e-6): boolean => maxAbsDiff(a, b) < tol;

for (const [backend, fused] of [
  ['cpu', true],
  ['wasm', true],
  ['wasm', false],
  ['cpu', false],
] as const) {
  t.test(`${backend}, ${fused ? 'fused kernels' : 'tf ops'}`, async (t) => {
    await useBackend(backend);
    setFusedUpdates(fused);
    t.teardown(() => setFusedUpdates(true));
    t.equal(fusedUpdatesActive(), fused);

    t.test('Lion: decay, p -= lr*sign(b1*m + (1-b1)*g), m = b2*m + (1-b2)*g', async (t) => {
      const r = twoSteps('lion');
      // Step 1: p*(1-0.001) = [0.999, -1.998, 0.4995]; sign(0.1*g1) = [1, -1, 0]; m = 0.01*g1.
      t.ok(close(r.after[0]!, [0.899, -1.898, 0.4995]), `step 1 ${r.after[0]}`);
      // Step 2: p*0.999 = [0.898101, -1.896102, 0.4990005]; 0.9*m + 0.1*g2 = [-0.0191, 0.0373, 0.005],
      // so p -= 0.1 * [-1, 1, 1].
      t.ok(close(r.after[1]!, [0.998101, -1.996102, 0.3990005]), `step 2 ${r.after[1]}`);
      // m = 0.99*[0.001, -0.003, 0] + 0.01*g2
      t.ok(close(r.state.get('exp_avg.w')!, [-0.00101, 0.00103, 0.0005], 1e-9), 'momentum');
      t.equal(r.steps, 2);
    });

    t.test('SGD momentum 0.9, coupled weight decay (torch.optim.SGD)', async (t) => {
      const r = twoSteps('sgd');
      // Step 1: g' = g1 + 0.01*p0 = [0.11, -0.32, 0.005] = buffer; p1 = p0 - 0.1*g'.
      t.ok(close(r.after[0]!, [0.989, -1.968, 0.4995]), `step 1 ${r.after[0]}`);
      // Step 2: g' = [-0.19011, 0.38032, 0.054995]; buf = 0.9*buf + g'; same as PyTorch.
      t.ok(close(r.after[1]!, [0.998111, -1.977232, 0.4935505]), `step 2 ${r.after[1]}`);
      t.ok(close(r.state.get('momentum_buffer.w')!, [-0.09111, 0.09232, 0.059495]), 'buffer');
      const n = twoSteps('sgd', { nesterov: true });
      t.ok(close(n.after[1]!, [1.00632971, -1.98559552, 0.488196805]), `nesterov ${n.after[1]}`);
    });

    t.test('AdamW equals torch.optim.AdamW (lr 0.1, wd 0.01, defaults otherwise)', async (t) => {
      const r = twoSteps('adamw');
      t.ok(close(r.after[1]!, [0.9347113603784889, -1.9154530436963575, 0.42458683868540115], 2e-6), `${r.after[1]}`);
      t.ok(close(r.state.get('exp_avg.w')!, [-0.011, 0.013, 0.005], 1e-8));
      t.ok(close(r.state.get('exp_avg_sq.w')!, [4.999e-5, 2.4991e-4, 2.5e-6], 1e-9));
    });

    t.test('LAMB: Adam direction + wd*p, scaled by ||p|| / ||update||', async (t) => {
      const r = twoSteps('lamb');
      const [b1, b2, eps] = [0.9, 0.999, 1e-6];
      let p = [...P0];
      let m = [0, 0, 0];
      let v = [0, 0, 0];
      const norm = (a: number[]): number => Math.sqrt(a.reduce((s, x) => s + x * x, 0));
      [G1, G2].forEach((g, k) => {
        const step = k + 1;
        m = m.map((mi, i) => b1 * mi + (1 - b1) * g[i]!);
        v = v.map((vi, i) => b2 * vi + (1 - b2) * g[i]! ** 2);
        const u = p.map((pi, i) => m[i]! / (1 - b1 ** step) / (Math.sqrt(v[i]! / (1 - b2 ** step)) + eps) + WD * pi);
        const trust = norm(p) > 0 && norm(u) > 0 ? norm(p) / norm(u) : 1;
        p = p.map((pi, i) => pi - LR * trust * u[i]!);
        t.ok(close(r.after[k]!, p, 2e-6), `step ${step}: ${r.after[k]} vs ${p}`);
      });
    });

    t.test('weight decay 0 and lr 0 leave Lion and AdamW parameters alone where they should', async (t) => {
      const p = tf.variable(tf.tensor1d([1, 2]), true, `z-${Math.random()}`);
      const opt = createOptimizer('lion', [{ name: 'w', variable: p }], { weightDecay: 0.5 });
      opt.apply([tf.tensor1d([1, -1])], 0);
      t.same(Array.from(p.dataSync()), [1, 2], 'lr 0: no decay, no step');
      opt.dispose();
      p.dispose();
    });

    t.test('state save / load continues identically; mismatched state is rejected', async (t) => {
      for (const name of ['lion', 'lamb', 'adamw', 'sgd'] as const) {
        const a = tf.variable(tf.tensor1d(P0), true, `a-${name}-${Math.random()}`);
        const oa = createOptimizer(name, [{ name: 'w', variable: a }], { weightDecay: WD });
        oa.apply([tf.tensor1d(G1)], LR);
        const saved = new Map([...oa.state()].map(([k, v]) => [k, { shape: v.shape, data: Float32Array.from(v.dataSync()) }]));
        const b = tf.variable(tf.tensor1d(Array.from(a.dataSync())), true, `b-${name}-${Math.random()}`);
        const ob = createOptimizer(name, [{ name: 'w', variable: b }], { weightDecay: WD });
        ob.load(saved, oa.steps);
        oa.apply([tf.tensor1d(G2)], LR);
        ob.apply([tf.tensor1d(G2)], LR);
        t.same(Array.from(b.dataSync()), Array.from(a.dataSync()), `${name}: identical after resume`);
        t.throws(() => ob.load(new Map(), 1), OptimizerStateError, `${name}: missing state`);
        const bad = new Map([...saved].map(([k]) => [k, { shape: [2], data: new Float32Array(2) }]));
        t.throws(() => ob.load(bad, 1), /shape \[2\] does not match \[3\]/);
        for (const x of [oa, ob]) x.dispose();
        a.dispose();
        b.dispose();
      }
    });

    t.test('clip by global norm: torch.nn.utils.clip_grad_norm_ arithmetic', async (t) => {
      const g = [tf.tensor1d([3, 4]), tf.tensor1d([0, 12])];
      t.ok(Math.abs(globalNorm(g).dataSync()[0]! - 13) < 1e-5);
      const c = clipByGlobalNorm(g, 1);
      t.ok(Math.abs(c.norm.dataSync()[0]! - 13) < 1e-5);
      t.ok(close(Array.from(c.grads[0]!.dataSync()), [0.23076921701431274, 0.307692289352417]));
      t.ok(close(Array.from(c.grads[1]!.dataSync()), [0, 0.923076868057251]));
      const loose = clipByGlobalNorm(g, 100);
      t.same(Array.from(loose.grads[1]!.dataSync()), [0, 12], 'below the threshold nothing changes');
      tf.dispose([...g, ...c.grads, c.norm, ...loose.grads, loose.norm]);
    });
  });
}
