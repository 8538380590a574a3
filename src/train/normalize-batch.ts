// A batch's images -> the model's input on the device, [n, c*h*w] float32. Float32 batches are
// uploaded as they are. uint8 batches (uint8 frames) are uploaded as pixels, converted and
// normalised on the device: x * (1/std[c]) + (-mean[c]/std[c]), both factors rounded to float32
// exactly as the loader's kernel rounds them, so a pixel that the float32 path did not resample
// gets bit for bit the value the float32 frame holds. Training (before MixUp), evaluation, TTA
// and fine-tuning all take their input from here.
//
// tfjs has no uint8 dtype, so the upload differs per backend (measured: bench/upload.ts):
//   wasm     'bool' tensors are one byte an element in the wasm heap, and its Cast kernel converts
//            them with a typed-array copy that keeps every value, not just 0/1: one byte a pixel
//            crosses into the heap.
//   cpu      its memory is the host's: normalised in one JavaScript loop (the same two float32
//            operations per value), as the cpu backend's own elementwise kernels take ~100 ns a
//            value on a 12M-value batch.
//   webgpu   'packed': the bytes go up as int32 words, 1 byte a pixel, and one WGSL program
//            unpacks and normalises them (backends/webgpu-pixels.ts). Every tfjs route ('bool',
//            'int32') widens each pixel to a 4-byte i32 in uploadToGPU's staging buffer, as many
//            bytes as a float32 batch; 'bool' stays the fallback where the program cannot run.
//   others   (tensorflow, webgl, anything new) 'int32' then cast: tfjs's documented semantics
//            (tfjs-node would turn a bool tensor into 0/1).
import * as tf from '@tensorflow/tfjs';
import type { Batch } from '../shared/data-feed.ts';
import { packedPixelInput, packedUploadAvailable } from './backends/webgpu-pixels.ts';

/**
 * bool/int32/float32: the tfjs dtype the pixels are uploaded as; host: normalised before upload;
 * packed: 4 pixels a 32-bit word, unpacked and normalised by a WebGPU program ('bool' elsewhere).
 */
export type PixelUpload = 'int32' | 'float32' | 'bool' | 'host' | 'packed';
export const PIXEL_UPLOADS: readonly PixelUpload[] = ['int32', 'float32', 'bool', 'host', 'packed'];

export class BatchError extends Error {
  override readonly name = 'BatchError';
}

/** The cheapest correct way to hand uint8 pixels to the tfjs backend named `tfBackend` (tf.getBackend()). */
export function pixelUploadFor(tfBackend: string): PixelUpload {
  if (tfBackend === 'wasm') return 'bool';
  if (tfBackend === 'cpu') return 'host';
  if (tfBackend === 'webgpu') return 'packed';
  return 'int32';
}

/** The pixels as a float32 tensor of the values 0..255, uploaded the `how` way (not 'host' or 'packed'). */
export function pixelTensor(pixels: Uint8Array, shape: number[], how: Exclude<PixelUpload, 'host' | 'packed'>): tf.Tensor {
  if (how === 'float32') return tf.tensor(pixels, shape, 'float32');
  return tf.tidy(() => tf.cast(tf.tensor(pixels, shape, how), 'float32'));
}

/** float32 (1/std, -mean/std) per channel, as the loader's normalisation() computes them. */
export function pixelScaleBias(mean: readonly number[], std: readonly number[]): { scale: Float32Array; bias: Float32Array } {
  const scale = new Float32Array(mean.length);
  const bias = new Float32Array(mean.length);
  for (let c = 0; c < mean.length; c++) {
    scale[c] = 1 / std[c]!;
    bias[c] = -mean[c]! / std[c]!;
  }
  return { scale, bias };
}

type BatchImages = Pick<Batch, 'n' | 'channels' | 'height' | 'width' | 'images' | 'pixelStats'>;

/**
 * The batch as the model's input, [n, c*h*w] float32, normalised (checked against the model's
 * `inputDim` when given). The tensor may alias the
 * batch's memory on some backends (as a float32 upload always could): release the batch only
 * after the step that uses it.
 */
export function batchInput(batch: BatchImages, inputDim?: number, how: PixelUpload = pixelUploadFor(tf.getBackend())): tf.Tensor2D {
  const { n, channels: c, height: h, width: w, images } = batch;
  const d = c * h * w;
  if (images.length !== n * d) throw new BatchError(`batch of ${n} x ${c}x${h}x${w} has ${images.length} image values`);
  if (inputDim !== undefined && inputDim !== d) throw new BatchError(`the model takes ${inputDim} values an image, the batch has ${c}x${h}x${w}`);
  if (images instanceof Float32Array) {
    if (batch.pixelStats) throw new BatchError('pixel statistics come with uint8 images only');
    return tf.tensor2d(images, [n, d]);
  }
  const stats = batch.pixelStats;
  if (!stats || stats.mean.length !== c || stats.std.length !== c) {
    throw new BatchError(`uint8 images need pixelStats with ${c} means and standard deviations`);
  }
  if (how === 'packed') {
    if (packedUploadAvailable()) {
      const { scale, bias } = pixelScaleBias(stats.mean, stats.std);
      return packedPixelInput(images, n, c, h * w, scale, bias);
    }
    how = 'bool';
  }
  const { scale, bias } = rowsOf(stats, c, h * w);
  if (how === 'host') {
    const out = new Float32Array(n * d);
    for (let r = 0; r < n; r++) {
      const o = r * d;
      for (let i = 0; i < d; i++) out[o + i] = Math.fround(images[o + i]! * scale[i]!) + bias[i]!;
    }
    return tf.tensor2d(out, [n, d]);
  }
  return tf.tidy(() => {
    const x = pixelTensor(images, [n, d], how);
    return tf.add(tf.mul(x, tf.tensor1d(scale)), tf.tensor1d(bias)) as tf.Tensor2D;
  });
}

// Per-channel factors spread over a whole image row ([c*h*w], channel-major): an operand that
// matches the input's trailing dimension broadcasts on every backend's fast path (the cpu
// backend's [c, 1] broadcast walks indices per element: 600 ns a pixel, bench/upload.ts).
const rowCache = new Map<string, { scale: Float32Array; bias: Float32Array }>();

function rowsOf(stats: { mean: readonly number[]; std: readonly number[] }, c: number, plane: number): { scale: Float32Array; bias: Float32Array } {
  const key = `${plane}:${stats.mean.join(',')}:${stats.std.join(',')}`;
  let rows = rowCache.get(key);
  if (rows === undefined) {
    const { scale, bias } = pixelScaleBias(stats.mean, stats.std);
    rows = { scale: new Float32Array(c * plane), bias: new Float32Array(c * plane) };
    for (let k = 0; k < c; k++) {
      rows.scale.fill(scale[k]!, k * plane, (k + 1) * plane);
      rows.bias.fill(bias[k]!, k * plane, (k + 1) * plane);
    }
    if (rowCache.size > 16) rowCache.clear();
    rowCache.set(key, rows);
  }
  return rows;
}
