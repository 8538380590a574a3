// uint8 batches uploaded packed (4 pixels a 32-bit word) and unpacked + normalised by a WGSL
// program (src/train/backends/webgpu-pixels.ts), on a real WebGPU adapter (lavapipe in CI):
// - the output equals the wasm and cpu backends' normalisation bit for bit (the program looks the
//   values up in a table the host computed with the same two float32 roundings), for sizes that
//   are not a multiple of 4 pixels, batch 1, 1 and 3 channels, and frames not 4-byte aligned;
// - the bytes copied to the device are 1 a pixel (plus the 256-entry table per channel), against
//   4 a pixel on tfjs's own routes, counted at the backend's upload;
// - a few training updates on uint8 batches equal wasm's within the tolerance of the other
//   webgpu tests, with a flat tensor count, and upload exactly the bytes saved per batch fewer.
// Skips where no adapter exists (the layout helpers are checked everywhere).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { readSafetensorsFile } from '../../src/model/safetensors.ts';
import type { DataFeed } from '../../src/shared/data-feed.ts';
import { Rng } from '../../src/shared/random.ts';
import { selectBackend } from '../../src/train/backend.ts';
import { countWebGpuUploads, normalizeTable, packedUploadAvailable, pixelWords } from '../../src/train/backends/webgpu-pixels.ts';
import { MemoryFeed } from '../../src/train/memory-feed.ts';
import { batchInput, pixelScaleBias, pixelUploadFor, type PixelUpload } from '../../src/train/normalize-batch.ts';
import { train, type UpdateInfo } from '../../src/train/train.ts';
import { tempDir } from '../helpers/tmp.ts';
import { probeWebGpu } from '../helpers/webgpu.ts';
import { smallOptions } from './helpers.ts';

const gpu = await probeWebGpu();
const quiet = { log: () => {} };
const MEAN = [123.675, 116.28, 103.53];
const STD = [58.395, 57.12, 57.375];

t.test('pixelWords: a view of 4-aligned whole words, else one zero-padded copy', async (t) => {
  const buf = new Uint8Array(20).map((_, i) => i + 1);
  const aligned = pixelWords(buf.subarray(4, 16));
  t.equal(aligned.buffer, buf.buffer, 'aligned, whole words: the same memory');
  t.equal(aligned.byteOffset, 4);
  t.equal(aligned.length, 3);
  t.equal(aligned[0], 5 | (6 << 8) | (7 << 16) | (8 << 24), 'little-endian: byte k is bits 8k..8k+7');
  const odd = pixelWords(buf.subarray(1, 8));
  t.not(odd.buffer, buf.buffer, 'unaligned: copied');
  t.same([...new Uint8Array(odd.buffer)], [2, 3, 4, 5, 6, 7, 8, 0], 'padded with zeros to whole words');
  const short = pixelWords(buf.subarray(0, 9));
  t.equal(short.length, 3, '9 bytes: 3 words');
  t.not(short.buffer, buf.buffer, 'a partial last word is copied, not read past the frame');
});

t.test('normalizeTable: fround(fround(v * scale) + bias) for every value and channel', async (t) => {
  const { scale, bias } = pixelScaleBias(MEAN, STD);
  const table = normalizeTable(scale, bias);
  t.equal(table.length, 768);
  let bad = 0;
  for (let c = 0; c < 3; c++) for (let v = 0; v < 256; v++) if (!Object.is(table[c * 256 + v], Math.fround(Math.fround(v * scale[c]!) + bias[c]!))) bad++;
  t.equal(bad, 0);
  t.equal(table[2 * 256 + 0], Math.fround(bias[2]!), 'channel 2, pixel 0 is its bias');
});

/** Batches of odd and even sizes: [n, c, h, w, byte offset of the frame in its buffer]. */
const SHAPES: [number, number, number, number, number][] = [
  [1, 1, 3, 3, 0], // 9 pixels: 2 whole words and one byte
  [1, 3, 5, 7, 0], // 105: batch 1, RGB, odd plane
  [3, 3, 5, 5, 0], // 225
  [4, 3, 3, 3, 0], // 108: whole words, each channel plane (9) splits words
  [2, 1, 2, 2, 0], // 8: whole words, 1 channel
  [5, 1, 7, 9, 2], // 315 at an unaligned offset
  [8, 3, 16, 16, 1], // 6,144 (whole words) at an unaligned offset
  [64, 3, 16, 16, 0], // 49,152: a view of the frame, vec4 stores
  [5, 3, 1, 1, 0], // 15: 1-pixel planes, a channel change at every pixel
  [3, 3, 1, 2, 0], // 18: 2-pixel planes, two channel changes in a word
  [2, 3, 2, 2, 0], // 24: 4-pixel planes, whole words
];

function pixelsFor(n: number, c: number, h: number, w: number, offset: number): Uint8Array {
  const rng = new Rng(n * 1000 + c * 100 + h * 10 + w, 7);
  const buf = new Uint8Array(offset + n * c * h * w + 3);
  for (let i = 0; i < buf.length; i++) buf[i] = rng.nextUint32() & 255;
  // Both ends of the range in every batch.
  buf[offset] = 0;
  buf[offset + n * c * h * w - 1] = 255;
  return buf.subarray(offset, offset + n * c * h * w);
}

async function normalised(how: PixelUpload | undefined, n: number, c: number, h: number, w: number, pixels: Uint8Array): Promise<Float32Array> {
  const x = batchInput({ n, channels: c, height: h, width: w, images: pixels, pixelStats: { mean: MEAN.slice(0, c), std: STD.slice(0, c) } }, undefined, how);
  const v = (await x.data()) as Float32Array;
  x.dispose();
  return v;
}

t.test('webgpu packed upload: bit for bit the wasm and cpu normalisation, 1 byte a pixel, no tensors left', { skip: gpu.skip }, async (t) => {
  await selectBackend('webgpu');
  t.equal(pixelUploadFor('webgpu'), 'packed', 'the default on webgpu');
  t.ok(packedUploadAvailable(), 'the program can run here');
  const got: Float32Array[] = [];
  for (const [n, c, h, w, off] of SHAPES) {
    const total = n * c * h * w;
    const pixels = pixelsFor(n, c, h, w, off);
    const before = tf.memory().numTensors;
    const counter = countWebGpuUploads()!;
    const packed = await normalised(undefined, n, c, h, w, pixels);
    counter.stop();
    got.push(packed);
    t.equal(tf.memory().numTensors, before, `${n}x${c}x${h}x${w}: no tensor left behind`);
    t.equal(counter.count.tensorBytes, 4 * Math.ceil(total / 4) + 4 * 256 * c, `${n}x${c}x${h}x${w}: uploads the pixels' bytes (whole words) and the table`);
    t.equal(counter.count.tensorUploads, 2);
    if (total >= 40000) {
      const bool = countWebGpuUploads()!;
      await normalised('bool', n, c, h, w, pixels);
      bool.stop();
      t.ok(bool.count.tensorBytes >= 4 * total, `bool route: ${bool.count.tensorBytes} bytes for ${total} pixels`);
      t.ok(counter.count.tensorBytes < 0.27 * bool.count.tensorBytes, `packed ${counter.count.tensorBytes} bytes vs bool ${bool.count.tensorBytes}`);
    }
  }
  for (const backend of ['wasm', 'cpu'] as const) {
    await selectBackend(backend);
    SHAPES.forEach(([n, c, h, w, off], k) => {
      const want = batchInput({
        n,
        channels: c,
        height: h,
        width: w,
        images: pixelsFor(n, c, h, w, off),
        pixelStats: { mean: MEAN.slice(0, c), std: STD.slice(0, c) },
      });
      const wv = want.dataSync() as Float32Array;
      want.dispose();
      let bad = 0;
      for (let i = 0; i < wv.length; i++) if (!Object.is(got[k]![i], wv[i])) bad++;
      t.equal(got[k]!.length, wv.length);
      t.equal(bad, 0, `${backend} ${n}x${c}x${h}x${w} (offset ${off}): all ${wv.length} values bit for bit`);
    });
  }
});

// Training: 3 x 3 x 3 images in micro-batches of 7 (189 pixels: the last word is partial).
const SHAPE = { channels: 3, res: 3, numClasses: 5 };
const D = SHAPE.channels * SHAPE.res * SHAPE.res;
const STATS = { mean: [120.5, 99, 140.25], std: [60, 55.5, 70.125] };

function data(n: number, seed: number): { pixels: Uint8Array; labels: Int32Array } {
  const rng = new Rng(seed, 0x08);
  const pixels = new Uint8Array(n * D);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = rng.below(SHAPE.numClasses);
    for (let j = 0; j < D; j++) pixels[i * D + j] = Math.min(255, labels[i]! * 40 + (rng.nextUint32() & 63));
  }
  return { pixels, labels };
}
const TRAIN = data(70, 1);
const VAL = data(21, 2);

function uint8Feeds(batchSize: number, seed: number): { train: DataFeed; val: DataFeed } {
  return {
    train: new MemoryFeed({ images: TRAIN.pixels, pixelStats: STATS, labels: TRAIN.labels, ...SHAPE, batchSize, shuffle: true, seed }),
    val: new MemoryFeed({ images: VAL.pixels, pixelStats: STATS, labels: VAL.labels, ...SHAPE, batchSize: 7 }),
  };
}

function weights(dir: string): Map<string, Float32Array> {
  return new Map([...readSafetensorsFile(join(dir, 'model.safetensors')).tensors].map(([k, v]) => [k, v.data]));
}

function stepLosses(out: string): number[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; loss?: number })
    .filter((r) => r.type === 'step')
    .map((r) => r.loss!);
}

t.test('webgpu: 3 updates on uint8 batches (packed upload, MixUp, smoothing, clip, accum 2) equal wasm within 1e-5', { skip: gpu.skip }, async (t) => {
  const opts = { optimizer: 'adamw' as const, accum: 2, batchSize: 14, epochs: 1, maxSteps: 3, lr: 2e-3 };
  const a = tempDir(t);
  const counts: number[] = [];
  await selectBackend('webgpu');
  const counter = countWebGpuUploads()!;
  const sa = await train(smallOptions(a, opts), uint8Feeds(7, 3), { ...quiet, onUpdate: (u: UpdateInfo) => counts.push(u.numTensors) });
  counter.stop();
  t.equal(sa.backend, 'webgpu');
  const b = tempDir(t);
  await selectBackend('wasm');
  const sb = await train(smallOptions(b, opts), uint8Feeds(7, 3), quiet);
  t.equal(sb.backend, 'wasm');
  const la = stepLosses(a);
  const lb = stepLosses(b);
  t.equal(la.length, 3);
  la.forEach((l, i) => t.ok(Math.abs(l - lb[i]!) <= 1e-5 * Math.abs(lb[i]!) + 1e-6, `update ${i + 1}: loss ${l} vs ${lb[i]}`));
  const wa = weights(a);
  const wb = weights(b);
  let worst = 0;
  for (const [k, x] of wa) for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - wb.get(k)![i]!));
  t.ok(worst <= 1e-5, `weights: max abs difference ${worst}`);
  t.equal(new Set(counts).size, 1, `tensor count flat from update to update: ${counts.join(', ')}`);
  t.ok(counter.count.tensorUploads > 0, `${counter.count.tensorBytes} bytes in ${counter.count.tensorUploads} uploads during the webgpu run`);
});

t.test('webgpu: a training run on uint8 batches uploads 1 byte a pixel where float32 batches upload 4', { skip: gpu.skip }, async (t) => {
  // The same run on webgpu fed the same images as uint8 pixels and as float32 values: every
  // other upload (labels, hyper-parameters, scalars) is the same, so the difference is exactly
  // the input batches' bytes.
  const opts = { optimizer: 'sgd' as const, accum: 1, batchSize: 7, epochs: 1, maxSteps: 4, mixup: 0 };
  const { scale, bias } = pixelScaleBias(STATS.mean, STATS.std);
  const floats = Float32Array.from(TRAIN.pixels, (v, i) => {
    const c = Math.floor((i % D) / (SHAPE.res * SHAPE.res));
    return Math.fround(Math.fround(v * scale[c]!) + bias[c]!);
  });
  const feeds = {
    uint8: new MemoryFeed({ images: TRAIN.pixels, pixelStats: STATS, labels: TRAIN.labels, ...SHAPE, batchSize: 7, shuffle: true, seed: 3 }),
    float32: new MemoryFeed({ images: floats, labels: TRAIN.labels, ...SHAPE, batchSize: 7, shuffle: true, seed: 3 }),
  };
  await selectBackend('webgpu');
  const bytes: Record<string, number> = {};
  const outs: Record<string, string> = {};
  for (const kind of ['uint8', 'float32'] as const) {
    outs[kind] = tempDir(t);
    const counter = countWebGpuUploads()!;
    try {
      await train(smallOptions(outs[kind]!, opts), { train: feeds[kind] }, quiet);
    } finally {
      counter.stop();
    }
    bytes[kind] = counter.count.tensorBytes;
  }
  const pixels = 7 * D; // one micro-batch: 189 pixels
  const saved = 4 * pixels - (4 * Math.ceil(pixels / 4) + 4 * 256 * 3);
  t.equal(bytes['float32']! - bytes['uint8']!, 4 * saved, `4 batches: ${bytes['float32']} - ${bytes['uint8']} bytes`);
  t.same(stepLosses(outs['uint8']!), stepLosses(outs['float32']!), 'the same losses: the packed input is the float32 input bit for bit');
});
