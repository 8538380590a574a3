// The training loop on a real WebGPU adapter (lavapipe in CI) against the wasm backend, same
// seed and data: each optimizer with warm-up + cosine, clipping, accumulation, smoothing and
// MixUp gives the same losses, weights and optimizer state within float tolerance; the tensor
// count stays flat; checkpoints cross backends both ways (webgpu -> wasm, wasm -> webgpu) and
// continue as an uninterrupted run; a batch over the device's binding limit is refused before
// the first step. Tiny shapes: lavapipe is a slow CPU rasteriser. Skips where no adapter exists.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import t, { type Test } from 'tap';
import { readSafetensorsFile } from '../../src/model/safetensors.ts';
import { selectBackend } from '../../src/train/backend.ts';
import { WebGpuLimitError } from '../../src/train/backends/webgpu.ts';
import { loadTrainCheckpoint } from '../../src/train/checkpoint.ts';
import type { DataFeed } from '../../src/shared/data-feed.ts';
import type { TrainConfig } from '../../src/train/config.ts';
import { train, type UpdateInfo } from '../../src/train/train.ts';
import { tempDir } from '../helpers/tmp.ts';
import { probeWebGpu } from '../helpers/webgpu.ts';
import { feedsFor, smallOptions } from './helpers.ts';

const gpu = await probeWebGpu();
const quiet = { log: () => {} };

type Backend = 'webgpu' | 'wasm';

function stepLosses(out: string): number[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; loss?: number })
    .filter((r) => r.type === 'step')
    .map((r) => r.loss!);
}

function weights(dir: string): Map<string, Float32Array> {
  return new Map([...readSafetensorsFile(join(dir, 'model.safetensors')).tensors].map(([k, v]) => [k, v.data]));
}

function optimizerState(out: string): Map<string, Float32Array> {
  return new Map([...loadTrainCheckpoint(out).optimizer].map(([k, v]) => [k, v.data]));
}

/** Largest |a - b| over every tensor of two same-named maps (Infinity when they differ in names or sizes). */
function worstDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  if (a.size !== b.size) return Infinity;
  let worst = 0;
  for (const [k, x] of a) {
    const y = b.get(k);
    if (!y || y.length !== x.length) return Infinity;
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
  }
  return worst;
}

async function run(backend: Backend, o: TrainConfig, onUpdate?: (u: UpdateInfo) => void) {
  await selectBackend(backend);
  return train(o, feedsFor(o), { ...quiet, ...(onUpdate ? { onUpdate } : {}) });
}

/** How many values differ by more than `tol`, and the largest difference. */
function over(a: Map<string, Float32Array>, b: Map<string, Float32Array>, tol: number): { count: number; total: number } {
  let count = 0;
  let total = 0;
  for (const [k, x] of a) {
    const y = b.get(k)!;
    total += x.length;
    for (let i = 0; i < x.length; i++) if (!(Math.abs(x[i]! - y[i]!) <= tol)) count++;
  }
  return { count, total };
}

// Lion moves every weight by lr * sign(c): where c is ~0 a float32 rounding difference can flip
// the sign, moving that one weight by 2 lr instead of ~0. Such flips are allowed for Lion only,
// in at most 0.5% of the weights, each within 2 lr per update.
const LION_FLIPS = 0.005;

for (const optimizer of ['lion', 'adamw', 'lamb', 'sgd'] as const) {
  t.test(`${optimizer}: 3 updates (accum 2, MixUp, smoothing, clip, warm-up + cosine) equal wasm's`, { skip: gpu.skip }, async (t) => {
    const opts = { optimizer, accum: 2, epochs: 1, maxSteps: 3, lr: 2e-3 };
    const a = tempDir(t);
    const counts: number[] = [];
    const sa = await run('webgpu', smallOptions(a, opts), (u) => counts.push(u.numTensors));
    t.equal(sa.backend, 'webgpu');
    const b = tempDir(t);
    const sb = await run('wasm', smallOptions(b, opts));
    t.equal(sb.backend, 'wasm');
    const la = stepLosses(a);
    const lb = stepLosses(b);
    t.equal(la.length, 3);
    la.forEach((l, i) => t.ok(Math.abs(l - lb[i]!) <= 1e-5 * Math.abs(lb[i]!) + 1e-6, `update ${i + 1}: loss ${l} vs ${lb[i]}`));
    const wa = weights(a);
    const wb = weights(b);
    const dw = worstDiff(wa, wb);
    if (optimizer === 'lion') {
      const off = over(wa, wb, 1e-5);
      t.ok(off.count <= LION_FLIPS * off.total, `weights: ${off.count} of ${off.total} differ by more than 1e-5`);
      t.ok(dw <= 2 * opts.lr * 3, `weights: max abs difference ${dw}`);
    } else {
      t.ok(dw <= 1e-5, `weights: max abs difference ${dw}`);
    }
    const ds = worstDiff(optimizerState(a), optimizerState(b));
    t.ok(ds <= 1e-5, `optimizer state: max abs difference ${ds}`);
    t.equal(new Set(counts).size, 1, `tensor count flat from update to update: ${counts.join(', ')}`);
  });
}

async function crossResume(t: Test, first: Backend, second: Backend): Promise<void> {
  const over = { optimizer: 'adamw' as const, accum: 2, epochs: 2, checkpointEvery: 1 };
  const straight = tempDir(t);
  await run('wasm', smallOptions(straight, { ...over, maxSteps: 8 }));
  const split = tempDir(t);
  const s1 = await run(first, smallOptions(split, { ...over, maxSteps: 5 }));
  t.match(s1, { stoppedBy: 'max-steps', globalStep: 5, backend: first });
  // 96 samples / 8 per micro-batch / accum 2 = 6 updates per epoch: update 8 is in epoch 2.
  const s2 = await run(second, smallOptions(split, { ...over, maxSteps: 8, resume: split }));
  t.match(s2, { globalStep: 8, backend: second });
  t.ok(s2.resumedFrom, 'resumed from the checkpoint written on the other backend');
  const la = stepLosses(straight);
  const lb = stepLosses(split);
  t.equal(lb.length, la.length);
  lb.forEach((l, i) => t.ok(Math.abs(l - la[i]!) <= 1e-5 * Math.abs(la[i]!) + 1e-6, `update ${i + 1}: ${l} vs ${la[i]}`));
  t.ok(worstDiff(weights(split), weights(straight)) <= 1e-5, `weights: ${worstDiff(weights(split), weights(straight))}`);
  t.ok(worstDiff(optimizerState(split), optimizerState(straight)) <= 1e-5, 'optimizer state');
  t.same(loadTrainCheckpoint(split).state.rng, loadTrainCheckpoint(straight).state.rng, 'RNG state identical');
}

t.test('a checkpoint written on webgpu resumes on wasm as an uninterrupted wasm run', { skip: gpu.skip }, async (t) => {
  await crossResume(t, 'webgpu', 'wasm');
});

t.test('a checkpoint written on wasm resumes on webgpu', { skip: gpu.skip }, async (t) => {
  await crossResume(t, 'wasm', 'webgpu');
});

t.test("a micro-batch over the device's binding limit is refused before the first step", { skip: gpu.skip }, async (t) => {
  await selectBackend('webgpu');
  const limit = gpu.adapter!.maxStorageBufferBindingSize;
  // 64x64x3 images: 48 KiB each, so the batch below is just over the limit. No data is read.
  const batchSize = Math.floor(limit / (12288 * 4)) + 1;
  let pulled = false;
  const feed: DataFeed = {
    info: { numSamples: batchSize, numClasses: 5, classes: ['0', '1', '2', '3', '4'], channels: 3, res: 64 },
    stepsPerEpoch: () => 1,
    close: async () => {},
    epoch: () => ({
      [Symbol.asyncIterator]: () => {
        pulled = true;
        return { next: async () => ({ done: true, value: undefined }) };
      },
    }),
  };
  const before = tf.memory().numTensors;
  const o = smallOptions(tempDir(t), { batchSize, epochs: 1, mixup: 0 });
  const e = await train(o, { train: feed }, quiet).catch((x: unknown) => x);
  t.type(e, WebGpuLimitError);
  t.match((e as Error).message, new RegExp(`the input batch \\(${batchSize} x 12288 float32\\).*use --accum 2`));
  t.notOk(pulled, 'no batch requested');
  t.equal(tf.memory().numTensors, before, 'model and optimizer released');
});
