// The WebAssembly SIMD kernels (src/model/simd/): the committed module imports only a memory and
// initialises none (so it cannot write into tfjs's heap beyond its outputs, checked byte for byte
// on a memory of our own), GELU's value and derivative against a float64 reference (every lane
// position of the 4-wide loop and its tail, large |x|, signed zero), AdamW and Lion bit-identical
// to their tf-ops versions, and the GELU op's gradient on the wasm backend.
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { gelu } from '../../src/model/ops.ts';
import { instantiateSimd, setSimdKernels, simdKernelsActive, simdModule, wasmSectionIds, type WasmMemory } from '../../src/model/simd/simd-kernels.ts';
import { setFusedUpdates } from '../../src/train/optim/fused.ts';
import { createOptimizer } from '../../src/train/optim/index.ts';
import { erf, geluRef } from './reference.ts';
import { useBackend } from './setup.ts';

await useBackend('wasm');
const noSimd = simdModule() ? false : 'this runtime cannot compile WebAssembly SIMD';

// lib.dom (which declares WebAssembly) is not loaded by this project's tsconfig.
const WA = (
  globalThis as unknown as {
    WebAssembly: { Memory: new (d: { initial: number }) => WasmMemory; Module: { imports(m: unknown): Array<{ module: string; name: string; kind: string }> } };
  }
).WebAssembly;

const geluDerivRef = (x: number): number => 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);

t.test('the committed module: imports one memory, no data section', { skip: noSimd }, async (t) => {
  const ids = wasmSectionIds(readFileSync(new URL('../../src/model/simd/kernels.wasm', import.meta.url)));
  t.notOk(ids.includes(11) || ids.includes(12), `sections ${ids.join(',')}: no data / data count`);
  t.same(WA.Module.imports(simdModule()), [{ module: 'env', name: 'memory', kind: 'memory' }]);
});

t.test('gelu on a memory of its own: values, derivatives, and nothing written outside the outputs', { skip: noSimd }, async (t) => {
  const memory = new WA.Memory({ initial: 4 });
  const k = instantiateSimd(memory);
  const f = new Float32Array(memory.buffer);
  f.fill(12345.5);
  const xs = [-40, -10, -6, -4, -3, -2.5, -1, -0.5, -1e-3, -0, 0, 1e-3, 0.5, 1, 2, 3, 4, 6, 10, 40, 0.25, -0.75, 1.5];
  const n = xs.length; // 23: five 4-wide blocks and a tail of 3
  const X = 1000;
  const Y = 2000;
  const D = 3000;
  f.set(xs, X);
  k.gelu(4 * X, 4 * Y, 4 * D, n);
  xs.forEach((x, i) => {
    const g = geluRef(x);
    const d = geluDerivRef(x);
    t.ok(Math.abs(f[Y + i]! - g) <= 2e-7 + 2e-6 * Math.abs(g), `GELU(${x}) = ${f[Y + i]} vs ${g}`);
    t.ok(Math.abs(f[D + i]! - d) <= 1e-6, `GELU'(${x}) = ${f[D + i]} vs ${d}`);
  });
  let stray = 0;
  for (let i = 0; i < f.length; i++) {
    const inside = (i >= X && i < X + n) || (i >= Y && i < Y + n) || (i >= D && i < D + n);
    if (!inside && f[i] !== 12345.5) stray++;
  }
  t.equal(stray, 0, 'every other float of the memory is untouched (no stack, no data)');
  for (const len of [0, 1, 2, 3]) {
    f.fill(7, Y, Y + 8);
    k.gelu(4 * X, 4 * Y, 4 * D, len);
    t.equal(f[Y + len], 7, `n = ${len}: nothing written past the end`);
  }
});

t.test('the GELU op on wasm: value and gradient against the reference and the tf-ops version', { skip: noSimd }, async (t) => {
  t.ok(simdKernelsActive());
  const xs = Array.from({ length: 4099 }, (_, i) => -8 + (16 * i) / 4098);
  const run = (): [Float32Array, Float32Array] =>
    tf.tidy(() => {
      const x = tf.tensor1d(xs);
      const { value, grad } = tf.valueAndGrad((v: tf.Tensor) => tf.sum(tf.mul(gelu(v), tf.linspace(0.5, 1.5, xs.length))))(x);
      value.dataSync();
      return [gelu(x).dataSync() as Float32Array, grad.dataSync() as Float32Array];
    });
  const [y, g] = run();
  setSimdKernels(false);
  t.notOk(simdKernelsActive());
  const [y0, g0] = run();
  setSimdKernels(true);
  let worstY = 0;
  let worstG = 0;
  let worstOps = 0;
  xs.forEach((x, i) => {
    const w = 0.5 + (1.0 * i) / (xs.length - 1);
    worstY = Math.max(worstY, Math.abs(y[i]! - geluRef(x)) / (1 + Math.abs(geluRef(x))));
    worstG = Math.max(worstG, Math.abs(g[i]! - w * geluDerivRef(x)));
    worstOps = Math.max(worstOps, Math.abs(y[i]! - y0[i]!), Math.abs(g[i]! - g0[i]!));
  });
  t.ok(worstY < 2e-6, `value: max relative error ${worstY}`);
  t.ok(worstG < 2e-6, `gradient: max error ${worstG}`);
  t.ok(worstOps < 2e-6, `vs the tf-ops version: max difference ${worstOps}`);
});

t.test('AdamW: bit-identical to the tf-ops update, weight decay on, odd sizes', { skip: noSimd }, async (t) => {
  const shapes = [[37, 29], [1027], [3]];
  const steps = (fused: boolean): Float32Array[] => {
    setSimdKernels(fused);
    const vars = shapes.map((s, i) => tf.variable(tf.randomNormal(s, 0, 1, 'float32', 40 + i)));
    const opt = createOptimizer(
      'adamw',
      vars.map((v, i) => ({ name: `p${i}`, variable: v })),
      { weightDecay: 0.05 },
    );
    for (let s = 0; s < 4; s++) {
      const grads = shapes.map((sh, i) => tf.randomNormal(sh, 0, s === 2 ? 1e-6 : 1, 'float32', 100 + 10 * s + i));
      opt.apply(grads, 1e-2);
      tf.dispose(grads);
    }
    const out = [...vars.map((v) => v.dataSync() as Float32Array), ...[...opt.state().values()].map((s) => s.dataSync() as Float32Array)];
    opt.dispose();
    tf.dispose(vars);
    setSimdKernels(true);
    return out;
  };
  const a = steps(true);
  const b = steps(false);
  t.equal(a.length, b.length);
  a.forEach((x, i) => t.same(Array.from(x), Array.from(b[i]!), `tensor ${i}: identical`));
});

t.test('Lion: bit-identical to the tf-ops update (sign(0) = 0 included), close to the JS pass', { skip: noSimd }, async (t) => {
  const shapes = [[37, 29], [1027], [3]];
  const steps = (mode: 'simd' | 'js' | 'ops'): Float32Array[] => {
    setSimdKernels(mode === 'simd');
    setFusedUpdates(mode !== 'ops');
    const vars = shapes.map((s, i) => tf.variable(tf.randomNormal(s, 0, 1, 'float32', 60 + i)));
    const opt = createOptimizer(
      'lion',
      vars.map((v, i) => ({ name: `p${i}`, variable: v })),
      { weightDecay: 0.1 },
    );
    for (let s = 0; s < 4; s++) {
      // Step 0 has zero momentum and some zero gradients: c = 0 exactly, so sign(c) = 0.
      const grads = shapes.map((sh, i) =>
        tf.tidy(() =>
          tf.mul(tf.randomNormal(sh, 0, 1, 'float32', 200 + 10 * s + i), tf.cast(tf.greater(tf.randomUniform(sh, 0, 1, 'float32', 300 + i), 0.2), 'float32')),
        ),
      );
      opt.apply(grads, 1e-2);
      tf.dispose(grads);
    }
    const out = [...vars.map((v) => v.dataSync() as Float32Array), ...[...opt.state().values()].map((s) => s.dataSync() as Float32Array)];
    opt.dispose();
    tf.dispose(vars);
    setSimdKernels(true);
    setFusedUpdates(true);
    return out;
  };
  const simd = steps('simd');
  const ops = steps('ops');
  const js = steps('js');
  simd.forEach((x, i) => {
    t.same(Array.from(x), Array.from(ops[i]!), `tensor ${i}: identical to tf ops`);
    let worst = 0;
    for (let j = 0; j < x.length; j++) worst = Math.max(worst, Math.abs(x[j]! - js[i]![j]!));
    t.ok(worst < 1e-6, `tensor ${i}: vs the JS pass, max difference ${worst}`);
  });
});
