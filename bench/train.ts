// Training throughput of one model on one backend, data served from memory: forward + backward +
// optimizer update per step, timed after warm-up. Prints one JSON line per run:
//   node --import tsx bench/train.ts [--arch B_2-Wi_512] [--batch-size 1024] [--backend auto]
//     [--res 32] [--channels 3] [--num-classes 10] [--steps 10] [--warmup-steps 2]
//     [--optimizer adamw] [--threads N] [--blas on|off] [--stock] [--data normal|uniform] [--frame-dtype float32|uint8]
// --stock measures the wasm backend without the kernel overrides (src/train/wasm-kernels.ts);
// --blas off keeps the overrides but sends matMuls to XNNPACK instead of a native BLAS (A/B);
// --threads sets the BLAS threads (default: every core, as nothing else runs here).
// On webgpu the line also names the adapter and the bytes held in GPU buffers after the steps,
// and counts the bytes copied to the device: input_upload_bytes_per_batch for one batch turned
// into the model's input (measured once before the timed steps; uint8 frames go up packed, 1 byte
// a pixel, float32 ones at 4) and upload_bytes_per_step over the timed steps (input, labels and
// the small per-step tensors).
// --frame-dtype uint8 serves uint8 pixels, so each step includes their upload and normalisation
// on the device (normalize-batch.ts), as with uint8 frames.
// The default model is the one bench/torch_mlp.py measures in PyTorch for comparison; adamw with
// weight decay 0 is Adam. On a shared machine, read single runs as rough figures.
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { parseArch } from '../src/model/arch.ts';
import { trainFlopsPerSample } from '../src/model/layout.ts';
import { Mlp } from '../src/model/mlp.ts';
import { BACKEND_ORDER, describeSelection, selectBackend, type BackendChoice } from '../src/train/backend.ts';
import { webGpuAdapter, webGpuBytes, webGpuMemoryLine } from '../src/train/backends/webgpu.ts';
import { countWebGpuUploads } from '../src/train/backends/webgpu-pixels.ts';
import { MemoryFeed, syntheticArrays } from '../src/train/memory-feed.ts';
import { batchInput } from '../src/train/normalize-batch.ts';
import { createOptimizer, OPTIMIZER_NAMES, OPTIMIZER_SLOTS, type OptimizerName } from '../src/train/optim/index.ts';
import { applyUpdate, microStep } from '../src/train/step.ts';
import { defaultBlasThreads } from '../src/train/blas/cblas.ts';
import { activeBlas, setMatMulRoute, uninstallWasmKernels, wasmKernelsInstalled, wasmMatMulNote } from '../src/train/wasm-kernels.ts';

const { values: a } = parseArgs({
  options: {
    arch: { type: 'string', default: 'B_2-Wi_512' },
    'batch-size': { type: 'string', default: '1024' },
    backend: { type: 'string', default: 'auto' },
    res: { type: 'string', default: '32' },
    channels: { type: 'string', default: '3' },
    'num-classes': { type: 'string', default: '10' },
    steps: { type: 'string', default: '10' },
    'warmup-steps': { type: 'string', default: '2' },
    optimizer: { type: 'string', default: 'adamw' },
    'weight-decay': { type: 'string', default: '0' },
    stock: { type: 'boolean', default: false },
    // 'uniform': cheap values for throughput only (the default's normal draws take ~40 s for two
    // batches of 16,384 64x64 images, time a lent GPU machine should not spend).
    data: { type: 'string', default: 'normal' },
    'frame-dtype': { type: 'string', default: 'float32' },
    threads: { type: 'string' },
    blas: { type: 'string', default: 'on' },
  },
});

const int = (s: string, name: string): number => {
  const v = Number(s);
  if (!Number.isInteger(v) || v < 0) throw new Error(`--${name}: expected a non-negative integer, got ${s}`);
  return v;
};
const batch = int(a['batch-size'], 'batch-size');
const res = int(a.res, 'res');
const channels = int(a.channels, 'channels');
const numClasses = int(a['num-classes'], 'num-classes');
const steps = Math.max(1, int(a.steps, 'steps'));
const warmup = int(a['warmup-steps'], 'warmup-steps');
const optName = a.optimizer as OptimizerName;
if (!OPTIMIZER_NAMES.includes(optName)) throw new Error(`--optimizer: one of ${OPTIMIZER_NAMES.join(', ')}`);
const backend = a.backend as BackendChoice | 'auto';
if (backend !== 'auto' && !BACKEND_ORDER.includes(backend)) throw new Error(`--backend: auto or one of ${BACKEND_ORDER.join(', ')}`);

const threads = a.threads === undefined ? defaultBlasThreads(0) : Math.max(1, int(a.threads, 'threads'));
if (a.blas !== 'on' && a.blas !== 'off') throw new Error('--blas: on or off');
const selection = await selectBackend(backend, {}, { threads });
if (a.blas === 'off' && selection.backend === 'wasm') {
  setMatMulRoute('xnnpack');
  selection.notes = [wasmMatMulNote()];
}
if (a.stock) uninstallWasmKernels();
const described = describeSelection(a.stock ? { ...selection, notes: ['wasm: stock kernels (overrides removed)'] } : selection);
process.stderr.write(`${described}\n`);

const spec = parseArch(a.arch);
const shape = { res, channels, numClasses };
if (selection.backend === 'webgpu') process.stderr.write(`${webGpuMemoryLine(spec, shape, batch, OPTIMIZER_SLOTS[optName], 1)}\n`);
// Two batches of distinct data, served in order (views, no copy), one per step alternately.
if (a.data !== 'normal' && a.data !== 'uniform') throw new Error('--data: normal or uniform');
const frameDtype = a['frame-dtype'];
if (frameDtype !== 'float32' && frameDtype !== 'uint8') throw new Error('--frame-dtype: float32 or uint8');
const data = a.data === 'uniform' ? uniformArrays(2 * batch, channels * res * res, numClasses) : syntheticArrays(2 * batch, channels, res, numClasses, 1);
// uint8: the same images as pixels around 128 with the statistics that map them back.
const pixelStats = { mean: new Array<number>(channels).fill(128), std: new Array<number>(channels).fill(32) };
const images = frameDtype === 'uint8' ? Uint8Array.from(data.images, (x) => Math.max(0, Math.min(255, Math.round(128 + 32 * x)))) : data.images;
const feed = new MemoryFeed({ images, labels: data.labels, channels, res, numClasses, batchSize: batch, ...(frameDtype === 'uint8' ? { pixelStats } : {}) });
const model = new Mlp({ arch: spec.name, ...shape }, 0);
const optimizer = createOptimizer(
  optName,
  model.params.map((p) => ({ name: p.entry.name, variable: p.variable })),
  { weightDecay: Number(a['weight-decay']) },
);

/** Values in [-1, 1) and labels from a xorshift generator: no structure to learn, ~1 ns a value. */
function uniformArrays(n: number, d: number, classes: number): { images: Float32Array; labels: Int32Array } {
  const images = new Float32Array(n * d);
  const labels = new Int32Array(n);
  let x = 0x9e3779b9;
  const next = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  for (let i = 0; i < images.length; i++) images[i] = next() / 2 ** 31 - 1;
  for (let i = 0; i < n; i++) labels[i] = next() % classes;
  return { images, labels };
}

async function* batches() {
  for (let e = 0; ; e++) yield* feed.epoch(e);
}

// One batch to the device alone, forced to finish, so its upload is counted apart from the step's.
let inputUploadBytes: number | null = null;
if (selection.backend === 'webgpu') {
  const first = (await feed.epoch(0)[Symbol.asyncIterator]().next()).value!;
  const counter = countWebGpuUploads();
  const x = batchInput(first, model.inputDim);
  const one = tf.slice(x, [0, 0], [1, 1]);
  await one.data();
  counter?.stop();
  tf.dispose([x, one]);
  first.release();
  inputUploadBytes = counter?.count.tensorBytes ?? null;
}

const times: number[] = [];
let loss = NaN;
let it = 0;
const stepCounter = countWebGpuUploads();
let timedFrom = 0;
for await (const b of batches()) {
  if (it >= warmup + steps) break;
  if (it === warmup) timedFrom = stepCounter?.count.tensorBytes ?? 0;
  const t0 = performance.now();
  const x = batchInput(b, model.inputDim);
  const y = tf.tensor1d(b.labels, 'int32');
  const r = microStep(model, x, y, 0);
  tf.dispose([x, y, r.top1, r.top5]);
  applyUpdate(optimizer, r.grads, 1e-4, 0);
  loss = (await r.loss.data())[0]!;
  r.loss.dispose();
  if (it >= warmup) times.push(performance.now() - t0);
  it++;
}
stepCounter?.stop();
const uploadPerStep = stepCounter ? (stepCounter.count.tensorBytes - timedFrom) / steps : null;
const mean = times.reduce((s, t) => s + t, 0) / times.length;
const best = Math.min(...times);
const flops = trainFlopsPerSample(spec, shape);
const ips = (1000 * batch) / mean;
const adapter = webGpuAdapter();
const gpuBytes = webGpuBytes();
process.stdout.write(
  `${JSON.stringify({
    bench: 'train',
    arch: spec.name,
    backend: selection.backend,
    wasm_kernels: wasmKernelsInstalled(),
    frame_dtype: frameDtype,
    matmul: selection.backend !== 'wasm' ? selection.backend : a.stock ? 'stock' : (activeBlas()?.name ?? 'xnnpack'),
    threads: selection.backend === 'wasm' && !a.stock && activeBlas() ? activeBlas()!.threads() : 1,
    optimizer: optName,
    batch_size: batch,
    input_dim: channels * res * res,
    num_classes: numClasses,
    params: model.numParams,
    steps,
    step_ms: Math.round(mean * 100) / 100,
    best_step_ms: Math.round(best * 100) / 100,
    images_per_sec: Math.round(ips * 10) / 10,
    gflops: Math.round(((ips * flops) / 1e9) * 100) / 100,
    loss: Math.round(loss * 1e4) / 1e4,
    num_tensors: tf.memory().numTensors,
    ...(adapter && selection.backend === 'webgpu'
      ? { adapter: { vendor: adapter.vendor, architecture: adapter.architecture, description: adapter.description, fallback: adapter.fallback } }
      : {}),
    ...(gpuBytes ? { gpu_bytes_in_use: gpuBytes.inUse, gpu_bytes_allocated: gpuBytes.allocated } : {}),
    ...(inputUploadBytes !== null
      ? {
          input_upload_bytes_per_batch: inputUploadBytes,
          input_upload_bytes_per_pixel: Number((inputUploadBytes / (batch * channels * res * res)).toFixed(4)),
          upload_bytes_per_step: uploadPerStep,
        }
      : {}),
  })}\n`,
);
optimizer.dispose();
model.dispose();
