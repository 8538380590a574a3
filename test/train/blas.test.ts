// The BLAS route of the wasm backend's matMuls (src/train/blas/): library discovery and its
// fallback, sgemm/sgemv on a WebAssembly.Memory checked by hand, the BatchMatMul and _FusedMatMul
// kernels against the cpu backend and against the XNNPACK route (every transpose, batched and
// broadcast, one-row/one-column products, empty inner dimension, bias shapes, every fused
// activation, an output that grows the heap), and a few training steps equal on both routes.
// Parts that need the library skip, saying why, where it is absent (CI installs it).
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { blasCandidates, installHint } from '../../src/train/blas/find-library.ts';
import { BlasUnavailableError, defaultBlasThreads, describeCblas, loadCblas, systemCblas, type Cblas } from '../../src/train/blas/cblas.ts';
import { Mlp } from '../../src/model/mlp.ts';
import { syntheticArrays } from '../../src/train/memory-feed.ts';
import { createOptimizer, type OptimizerName } from '../../src/train/optim/index.ts';
import { applyUpdate, microStep } from '../../src/train/step.ts';
import { installWasmKernels, matMulRoute, setMatMulRoute, wasmMatMulNote } from '../../src/train/wasm-kernels.ts';
import type { WasmBackendInternals } from '../../src/train/host-memory.ts';
import { describeSelection, selectBackend } from '../../src/train/backend.ts';
import { useBackend } from '../model/setup.ts';

await useBackend('wasm');
const system = systemCblas();
const noBlas = system.ok ? false : `no BLAS here (${system.reason})`;

t.test('candidates: the linker first, then the Debian variants; Accelerate on macOS; an explicit path alone', async (t) => {
  const linux = blasCandidates({ platform: 'linux', arch: 'x64' }).map((c) => c.path);
  t.equal(linux[0], 'libopenblas.so.0');
  for (const v of ['openblas-pthread', 'openblas-openmp']) t.ok(linux.includes(`/usr/lib/x86_64-linux-gnu/${v}/libopenblas.so.0`), v);
  t.ok(blasCandidates({ platform: 'linux', arch: 'arm64' }).some((c) => c.path === '/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0'));
  const mac = blasCandidates({ platform: 'darwin', arch: 'arm64' });
  t.match(mac[0], { path: /Accelerate\.framework/, flavour: 'accelerate' });
  t.same(blasCandidates({ platform: 'linux', arch: 'x64', explicit: '/opt/x/libopenblas.so.0' }), [{ path: '/opt/x/libopenblas.so.0', flavour: 'openblas' }]);
  t.equal(installHint('linux'), 'apt-get install libopenblas0-pthread');
  t.equal(defaultBlasThreads(1, 2), 1);
  t.equal(defaultBlasThreads(3, 2), 1, 'at least one');
  t.equal(defaultBlasThreads(0, 8), 8);
});

t.test('not found, koffi missing, switched off: a reason, and the XNNPACK route', async (t) => {
  const missing = loadCblas({ candidates: [{ path: '/nonexistent/libopenblas.so.0', flavour: 'openblas' }], switch: undefined });
  t.notOk(missing.ok);
  if (missing.ok) return;
  t.match(missing.reason, /^libopenblas not found; apt-get install libopenblas0-pthread for ~/);
  t.same(missing.tried, ['/nonexistent/libopenblas.so.0']);
  const noKoffi = loadCblas({
    requireKoffi: () => {
      throw Object.assign(new Error("Cannot find module 'koffi'"), { code: 'MODULE_NOT_FOUND' });
    },
    switch: undefined,
  });
  t.match(noKoffi, { ok: false, reason: /^koffi \(optional dependency\) did not load: Cannot find module 'koffi'/ });
  t.match(loadCblas({ switch: 'off' }), { ok: false, reason: /SMLP_BLAS=off/ });

  const note = installWasmKernels({ blas: missing });
  t.equal(note, `wasm (XNNPACK): ${missing.reason}`);
  t.equal(wasmMatMulNote(), note);
  t.equal(matMulRoute(), 'xnnpack');
  t.throws(() => setMatMulRoute('blas'), BlasUnavailableError);
  // The fallback computes: a transposed product against the cpu backend.
  const fallback = transposedProducts();
  await useBackend('cpu');
  const cpu = transposedProducts();
  await useBackend('wasm');
  fallback.forEach((f, i) => t.ok(maxRel(f, cpu[i]!) < 5e-6, `fallback case ${i}`));
  t.match(installWasmKernels(), system.ok ? /^wasm \+ / : /^wasm \(XNNPACK\): /, 'back to the system library');
});

function transposedProducts(): Float32Array[] {
  return tf.tidy(() => {
    const a = tf.randomNormal([19, 23], 0, 1, 'float32', 11);
    const b = tf.randomNormal([23, 17], 0, 1, 'float32', 12);
    return [tf.matMul(a, b), tf.matMul(tf.transpose(a), b, true, false), tf.matMul(a, tf.transpose(b), false, true)].map((x) => x.dataSync() as Float32Array);
  });
}

function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!));
    if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : d;
  }
  return worst;
}

t.test('sgemm and sgemv on a WebAssembly.Memory, in place, against a hand computation', { skip: noBlas }, async (t) => {
  const blas = (system as { blas: Cblas }).blas;
  // lib.dom (which declares WebAssembly) is not loaded by this project's tsconfig.
  const wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly;
  const heap = new Float32Array(new wasm.Memory({ initial: 1 }).buffer);
  // A = [[1,2,3],[4,5,6]] (2x3) at 8, B = [[1,0],[0,1],[1,1]] (3x2) at 20, C at 40.
  heap.set([1, 2, 3, 4, 5, 6], 8);
  heap.set([1, 0, 0, 1, 1, 1], 20);
  heap.fill(7, 40, 44);
  blas.sgemm(heap, false, false, 2, 2, 3, 1, 8, 3, 20, 2, 0, 40, 2);
  t.same(Array.from(heap.subarray(40, 44)), [4, 5, 10, 11], 'A B written into the heap');
  // Both transposed: op(stored 3x2 at 20) = 2x3, op(stored 2x3 at 8) = 3x2, i.e. B^T A^T = (A B)^T.
  blas.sgemm(heap, true, true, 2, 2, 3, 1, 20, 2, 8, 3, 0, 40, 2);
  t.same(Array.from(heap.subarray(40, 44)), [4, 10, 5, 11], 'B^T A^T = (A B)^T');
  heap.fill(1, 44, 47);
  blas.sgemm(heap, false, false, 2, 2, 3, 2, 8, 3, 20, 2, 1, 40, 2);
  t.same(Array.from(heap.subarray(40, 44)), [12, 20, 25, 33], 'alpha 2, beta 1: 2 A B + the previous C');
  heap.set([1, 1], 50);
  blas.sgemv(heap, false, 2, 3, 1, 8, 3, 44, 1, 0, 52, 1); // A [1,1,1]
  t.same(Array.from(heap.subarray(52, 54)), [6, 15]);
  blas.sgemv(heap, true, 2, 3, 1, 8, 3, 50, 1, 0, 52, 1); // A^T [1,1]
  t.same(Array.from(heap.subarray(52, 55)), [5, 7, 9]);
  if (blas.flavour === 'openblas') {
    t.equal(blas.setThreads(1), 1);
    t.match(describeCblas(blas), /^OpenBLAS [\d.]+.*, 1 thread$/);
    t.equal(blas.setThreads(2), 2);
    t.match(describeCblas(blas), /, 2 threads$/);
  }
});

/** Products covering every path of the BLAS kernels; values come back to compare. */
/** Cases the stock wasm kernels cannot run (rank-2 fused bias throws; k = 0 fails in XNNPACK). */
const BLAS_ONLY = new Set(['empty inner dimension', 'fused bias [37, 29] (added after)']);
/** Cases stock wasm 4.22 gets wrong (its fused kernel misapplies a [1] bias and a batched bias). */
const STOCK_WRONG = new Set(['fused scalar-like bias [1]', 'fused batched + bias']);

function kernelCases(): Array<[string, () => tf.Tensor]> {
  const r = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, 'float32', seed);
  const a = r([37, 53], 1);
  const b = r([53, 29], 2);
  const at = tf.transpose(a);
  const bt = tf.transpose(b);
  const bias = r([29], 3);
  const fused =
    (activation: tf.fused.Activation, extra: Partial<Parameters<typeof tf.fused.matMul>[0]> = {}) =>
    () =>
      tf.fused.matMul({ a: at as tf.Tensor2D, b, transposeA: true, bias, activation, ...extra });
  return [
    ['a b', () => tf.matMul(a, b)],
    ['a^T b', () => tf.matMul(at, b, true, false)],
    ['a b^T', () => tf.matMul(a, bt, false, true)],
    ['a^T b^T', () => tf.matMul(at, bt, true, true)],
    ['batched a b^T', () => tf.matMul(r([3, 17, 11], 4), r([3, 13, 11], 5), false, true)],
    ['broadcast batch [1] x [4] transposed', () => tf.matMul(r([1, 7, 5], 8), r([4, 6, 7], 9), true, true)],
    ['rank 3 x rank 2', () => tf.matMul(r([2, 5, 7], 10), r([7, 3], 11))],
    ['one row (bias gradient: ones x dY)', () => tf.matMul(tf.ones([1, 37]), a)],
    ['one row, a^T', () => tf.matMul(tf.ones([37, 1]), a, true, false)],
    ['one row, b^T', () => tf.matMul(r([1, 53], 12), bt, false, true)],
    ['one column', () => tf.matMul(a, r([53, 1], 13))],
    ['one column, a^T', () => tf.matMul(at, r([53, 1], 14), true, false)],
    ['one column, b^T', () => tf.matMul(a, r([1, 53], 15), false, true)],
    ['1x1', () => tf.matMul(r([1, 53], 16), r([53, 1], 17))],
    ['empty inner dimension', () => tf.matMul(tf.zeros([4, 0]), tf.zeros([0, 3]))],
    ['empty output', () => tf.matMul(tf.zeros([0, 4]), r([4, 3], 18))],
    ['fused linear + bias', fused('linear')],
    ['fused relu', fused('relu')],
    ['fused relu6', fused('relu6')],
    ['fused elu', fused('elu')],
    ['fused sigmoid', fused('sigmoid')],
    ['fused leakyrelu 0.1', fused('leakyrelu', { leakyreluAlpha: 0.1 })],
    ['fused prelu', fused('prelu', { preluActivationWeights: r([29], 19) })],
    ['fused scalar-like bias [1]', () => tf.fused.matMul({ a, b, bias: tf.tensor1d([0.5]) })],
    ['fused bias [37, 29] (added after)', () => tf.fused.matMul({ a, b: bt as tf.Tensor2D, transposeB: true, bias: r([37, 29], 20) })],
    ['fused no bias, b^T', () => tf.fused.matMul({ a, b: bt as tf.Tensor2D, transposeB: true })],
    [
      'fused batched + bias',
      () => tf.fused.matMul({ a: r([2, 5, 7], 21) as unknown as tf.Tensor2D, b: r([2, 7, 3], 22) as unknown as tf.Tensor2D, bias: r([3], 23) }),
    ],
  ];
}

function runCases(all = true): Array<{ name: string; shape: number[]; values: Float32Array }> {
  return tf.tidy(() =>
    kernelCases()
      .filter(([name]) => all || !BLAS_ONLY.has(name))
      .map(([name, f]) => {
        const y = f();
        return { name, shape: y.shape, values: y.dataSync() as Float32Array };
      }),
  );
}

t.test('kernels: equal to the cpu backend and to the XNNPACK route within float32 rounding', { skip: noBlas }, async (t) => {
  await useBackend('cpu');
  const cpu = runCases();
  await useBackend('wasm');
  setMatMulRoute('xnnpack');
  const xnn = new Map(runCases(false).map((c) => [c.name, c]));
  setMatMulRoute('blas');
  const before = tf.memory().numTensors;
  const blas = runCases();
  t.equal(tf.memory().numTensors, before, 'no tensor leaked');
  blas.forEach((c, i) => {
    t.same(c.shape, cpu[i]!.shape, `${c.name}: shape`);
    // Sums of ~50 products of unit normals: a few ulps of rounding-order difference at most.
    t.ok(maxRel(c.values, cpu[i]!.values) < 5e-6, `${c.name}: vs cpu, max relative difference ${maxRel(c.values, cpu[i]!.values)}`);
    const x = xnn.get(c.name);
    if (x && STOCK_WRONG.has(c.name))
      t.comment(`${c.name}: the XNNPACK route (stock kernel) is off by ${maxRel(x.values, cpu[i]!.values).toFixed(3)}; BLAS matches cpu`);
    else if (x) t.ok(maxRel(c.values, x.values) < 5e-6, `${c.name}: vs XNNPACK route, max relative difference ${maxRel(c.values, x.values)}`);
  });
});

t.test("batch dims broadcast as NumPy's (tfjs's cpu backend pairs batches modulo their count instead)", { skip: noBlas }, async (t) => {
  setMatMulRoute('blas');
  const a = tf.randomNormal([2, 1, 5, 7], 0, 1, 'float32', 6);
  const b = tf.randomNormal([3, 7, 4], 0, 1, 'float32', 7);
  const y = tf.matMul(a, b);
  t.same(y.shape, [2, 3, 5, 4]);
  const got = y.arraySync() as number[][][][];
  const av = a.arraySync() as number[][][][];
  const bv = b.arraySync() as number[][][];
  let worst = 0;
  for (let p = 0; p < 2; p++)
    for (let q = 0; q < 3; q++)
      for (let i = 0; i < 5; i++)
        for (let j = 0; j < 4; j++) {
          let s = 0;
          for (let k = 0; k < 7; k++) s += av[p]![0]![i]![k]! * bv[q]![k]![j]!;
          worst = Math.max(worst, Math.abs(got[p]![q]![i]![j]! - s));
        }
  t.ok(worst < 1e-5, `y[p, q] = a[p, 0] b[q] (max abs difference ${worst})`);
  tf.dispose([a, b, y]);
});

t.test('an output that grows the wasm heap is written where the tensor lives', { skip: noBlas }, async (t) => {
  setMatMulRoute('blas');
  const a = tf.randomNormal([3000, 4], 0, 1, 'float32', 31);
  const b = tf.randomNormal([4, 5000], 0, 1, 'float32', 32);
  const heapBytes = (): number => (tf.backend() as unknown as WasmBackendInternals).wasm.HEAPF32.buffer.byteLength;
  const before = heapBytes();
  const y = tf.matMul(a, b); // 60 MB
  t.ok(heapBytes() > before, `the heap grew (${before} -> ${heapBytes()} bytes)`);
  const got = y.dataSync();
  const av = a.dataSync();
  const bv = b.dataSync();
  let worst = 0;
  for (const [i, j] of [
    [0, 0],
    [2999, 4999],
    [1234, 2345],
    [17, 4000],
  ] as const) {
    let s = 0;
    for (let k = 0; k < 4; k++) s += av[i * 4 + k]! * bv[k * 5000 + j]!;
    worst = Math.max(worst, Math.abs(got[i * 5000 + j]! - s));
  }
  t.ok(worst < 1e-5, `sampled entries equal a hand computation (max abs difference ${worst})`);
  tf.dispose([a, b, y]);
});

/** A few optimizer updates on a small MLP; losses per step and the final weights. */
function trainSteps(optimizer: OptimizerName, steps: number): { losses: number[]; weights: Float32Array[] } {
  const shape = { res: 8, channels: 3, numClasses: 10 };
  const data = syntheticArrays(64, shape.channels, shape.res, shape.numClasses, 5);
  const model = new Mlp({ arch: 'B_2-Wi_64', ...shape }, 7);
  const opt = createOptimizer(
    optimizer,
    model.params.map((p) => ({ name: p.entry.name, variable: p.variable })),
    { weightDecay: 1e-2 },
  );
  const losses: number[] = [];
  for (let s = 0; s < steps; s++) {
    const x = tf.tensor2d(data.images, [64, model.inputDim]);
    const y = tf.tensor1d(data.labels, 'int32');
    const r = microStep(model, x, y, 0.1);
    applyUpdate(opt, r.grads, 1e-3, s);
    losses.push(r.loss.dataSync()[0]!);
    tf.dispose([x, y, r.loss, r.top1, r.top5]);
  }
  const weights = model.params.map((p) => p.variable.dataSync() as Float32Array);
  opt.dispose();
  model.dispose();
  return { losses, weights };
}

t.test('training steps: losses and weights equal on the BLAS and XNNPACK routes', { skip: noBlas }, async (t) => {
  for (const name of ['sgd', 'adamw', 'lion'] as const) {
    setMatMulRoute('xnnpack');
    const xnn = trainSteps(name, 4);
    setMatMulRoute('blas');
    const blas = trainSteps(name, 4);
    t.ok(maxRel(blas.losses, xnn.losses) < 1e-5, `${name}: losses ${blas.losses.map((l) => l.toFixed(6))} vs ${xnn.losses.map((l) => l.toFixed(6))}`);
    t.ok(xnn.losses.at(-1)! < xnn.losses[0]!, `${name}: it learns`);
    // Lion (and Adam at its first step) move each weight by about lr * sign(g): a gradient that is
    // ~0 may round to either sign, so a handful of the 79k weights may differ by up to a few lr.
    const lr = 1e-3;
    let worst = 0;
    let flips = 0;
    let total = 0;
    blas.weights.forEach((w, i) => {
      const v = xnn.weights[i]!;
      total += w.length;
      for (let j = 0; j < w.length; j++) {
        const d = Math.abs(w[j]! - v[j]!);
        if (d > 1e-6) flips++;
        worst = Math.max(worst, d);
      }
    });
    t.ok(
      worst <= 8 * lr + 1e-6 && flips <= total * 1e-3,
      `${name}: weights: max abs difference ${worst.toExponential(2)}, ${flips} of ${total} differ by more than 1e-6`,
    );
    if (name === 'sgd') t.ok(worst < 1e-6, 'sgd (linear in the gradient): equal within float rounding');
  }
});

t.test('the backend line names the route and the thread count', async (t) => {
  const s = await selectBackend('wasm', {}, { threads: 1 });
  const line = describeSelection(s);
  if (system.ok && system.blas.flavour === 'openblas') t.match(line, /wasm \+ OpenBLAS [\d.]+(?: \(\w+\))?, 1 thread(;|$)/);
  else t.match(line, /wasm \(XNNPACK\): /);
  const injected = await selectBackend('wasm', { prepare: () => 'wasm + SomeBLAS 1.0, 3 threads' });
  t.match(describeSelection(injected), /backend: wasm; .*wasm \+ SomeBLAS 1\.0, 3 threads/);
});
