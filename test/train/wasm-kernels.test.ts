// The wasm kernel overrides: transposed matMuls (plain and fused, rank 2 and 3) give the stock
// kernels' results up to float32 rounding (XNNPACK sums in a different order than the stock
// naive loop, so not bit for bit) and transposes are exact; how much faster they are is measured
// by `npm run bench -- train` against `--stock`, not timed here (the machines are shared). Stock
// _FusedMatMul with a bias and a transposed operand is simply wrong on wasm 4.22 (the bias is
// misapplied); through the override it matches the cpu backend. This file covers the XNNPACK
// route (what runs without a BLAS library); blas.test.ts covers the BLAS route.
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { installWasmKernels as installAny, setMatMulRoute, uninstallWasmKernels, wasmKernelsInstalled } from '../../src/train/wasm-kernels.ts';
import { useBackend } from '../model/setup.ts';

function installWasmKernels(): void {
  installAny();
  setMatMulRoute('xnnpack');
}

await useBackend('wasm');
setMatMulRoute('xnnpack');

function results(): Float32Array[] {
  return tf.tidy(() => {
    const a = tf.randomNormal([37, 53], 0, 1, 'float32', 1);
    const b = tf.randomNormal([53, 29], 0, 1, 'float32', 2);
    const at = tf.transpose(a);
    const bt = tf.transpose(b);
    const bias = tf.randomNormal([29], 0, 1, 'float32', 3);
    const a3 = tf.randomNormal([3, 17, 11], 0, 1, 'float32', 4);
    const b3 = tf.randomNormal([3, 13, 11], 0, 1, 'float32', 5);
    return [
      tf.matMul(a, b),
      tf.matMul(at, b, true, false),
      tf.matMul(a, bt, false, true),
      tf.matMul(at, bt, true, true),
      tf.fused.matMul({ a: at as tf.Tensor2D, b: bt as tf.Tensor2D, transposeA: true, transposeB: true, bias, activation: 'relu' }),
      tf.matMul(a3, b3, false, true),
      tf.transpose(a),
      tf.transpose(a3, [0, 2, 1]),
      tf.transpose(tf.tensor2d([[1, 2, 3]], [1, 3], 'int32')),
    ].map((x) => x.dataSync() as Float32Array);
  });
}

const FUSED_WITH_BIAS = 4;

t.test('same results as the stock kernels and as the cpu backend', async (t) => {
  await useBackend('cpu');
  const cpu = results();
  await useBackend('wasm');
  t.ok(wasmKernelsInstalled());
  const fixed = results();
  uninstallWasmKernels();
  t.notOk(wasmKernelsInstalled());
  const stock = results();
  installWasmKernels();
  installWasmKernels(); // idempotent
  const rel = (a: Float32Array, b: Float32Array): number => {
    if (a.length !== b.length) return Infinity;
    let worst = 0;
    for (let j = 0; j < a.length; j++) worst = Math.max(worst, Math.abs(a[j]! - b[j]!) / Math.max(1, Math.abs(b[j]!)));
    return worst;
  };
  fixed.forEach((f, i) => {
    // Sums of ~50 products of unit normals: a few ulps of rounding-order difference at most.
    t.ok(rel(f, cpu[i]!) < 5e-6, `case ${i}: vs cpu, max relative difference ${rel(f, cpu[i]!)}`);
    if (i === FUSED_WITH_BIAS) {
      const bad = rel(stock[i]!, cpu[i]!);
      if (bad > 1e-3) t.comment(`stock wasm fused matMul with bias + transposes is off by ${bad.toFixed(3)} (relative); the override is right`);
    } else {
      t.ok(rel(f, stock[i]!) < 5e-6, `case ${i}: vs stock wasm, max relative difference ${rel(f, stock[i]!)}`);
    }
    if (i >= 6) t.same(Array.from(f), Array.from(stock[i]!), `case ${i}: transposes are exact`);
  });
  // The explicitly-transposed product is the plain product of the same operands, bit for bit.
  t.same(Array.from(fixed[1]!), Array.from(fixed[0]!));
  t.same(Array.from(fixed[3]!), Array.from(fixed[0]!));
});
