// Cost of turning one batch into the model's input on the device (normalize-batch.ts): a float32
// batch uploaded as it is, against a uint8 batch uploaded each way tfjs allows (the backend's
// default marked) and normalised on the device. One JSON line per (backend, batch, path); paths
// alternate within each round so they see the same machine load; the median round is reported.
//   npm run bench -- upload [--backends wasm,cpu] [--batch-size 1024,4096] [--res 64] [--rounds 7]
// On an asynchronous backend (webgpu) host_ms is the time until the call returns (the host-side
// conversion and staging copy; a float32 batch is uploaded by its first op, forced here with a
// one-value slice) and ms_per_batch the time until one value of the result has been read back;
// there upload_bytes_per_batch is counted, not assumed: the bytes the backend copied to the device
// for that batch (its staging uploads), and uniform_bytes_per_batch its queue.writeBuffer bytes.
//   --paths float32,uint8:packed,uint8:bool   only these paths (float32 always: the reference)
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, type BackendChoice } from '../src/train/backend.ts';
import { countWebGpuUploads } from '../src/train/backends/webgpu-pixels.ts';
import { batchInput, pixelUploadFor, type PixelUpload } from '../src/train/normalize-batch.ts';

const { values: v } = parseArgs({
  options: {
    backends: { type: 'string', default: 'wasm,cpu' },
    'batch-size': { type: 'string', default: '1024,4096' },
    res: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '7' },
    paths: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (v.help) {
  process.stdout.write(
    'npm run bench -- upload [--backends wasm,cpu,webgpu] [--batch-size 1024,4096] [--res 64] [--rounds 7] [--paths float32,uint8:packed,...]\n',
  );
  process.exit(0);
}
const res = Number(v.res);
const rounds = Number(v.rounds);
const C = 3;
const stats = { mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375] };

// Bytes a pixel that the upload itself hands to the backend's memory.
const BYTES: Record<string, Record<string, number>> = {
  wasm: { float32: 4, 'uint8:bool': 1, 'uint8:int32': 4, 'uint8:float32': 4, 'uint8:host': 4 },
  cpu: { float32: 4, 'uint8:host': 4, 'uint8:float32': 4, 'uint8:int32': 4 },
  // uploadToGPU widens int32 and bool to 4-byte i32; 'packed' sends the bytes as int32 words.
  webgpu: { float32: 4, 'uint8:packed': 1, 'uint8:bool': 4, 'uint8:int32': 4, 'uint8:float32': 4, 'uint8:host': 4 },
};
const UPLOADS: Record<string, PixelUpload[]> = {
  wasm: ['bool', 'int32', 'float32', 'host'],
  cpu: ['host', 'float32', 'int32'],
  webgpu: ['packed', 'bool', 'int32', 'float32', 'host'],
};
const only = v.paths === undefined ? null : new Set(v.paths.split(','));

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

for (const backend of v.backends!.split(',') as BackendChoice[]) {
  await selectBackend(backend);
  for (const n of v['batch-size']!.split(',').map(Number)) {
    const d = C * res * res;
    // Plain loops: typed-array from() with a callback takes seconds at 16,384 x 3x64x64.
    const pixels = new Uint8Array(n * d);
    for (let i = 0; i < pixels.length; i++) pixels[i] = Math.imul(i, 2654435761 | 0) >>> 24;
    const floats = new Float32Array(n * d);
    for (let i = 0; i < floats.length; i++) floats[i] = (pixels[i]! - stats.mean[Math.floor((i % d) / (res * res))]!) / stats.std[0]!;
    const all: [string, () => tf.Tensor][] = [
      ['float32', () => batchInput({ n, channels: C, height: res, width: res, images: floats }, d)],
      ...UPLOADS[backend]!.map((how): [string, () => tf.Tensor] => [
        `uint8:${how}`,
        () => batchInput({ n, channels: C, height: res, width: res, images: pixels, pixelStats: stats }, d, how),
      ]),
    ];
    const paths = all.filter(([name]) => only === null || name === 'float32' || only.has(name));
    const uploaded = new Map<string, { tensorBytes: number; writeBufferBytes: number }>();
    const times = new Map<string, number[]>(paths.map(([name]) => [name, []]));
    const hostTimes = new Map<string, number[]>(paths.map(([name]) => [name, []]));
    const sync = backend === 'wasm' || backend === 'cpu';
    for (let r = 0; r < rounds + 1; r++) {
      for (const [name, run] of paths) {
        const counter = countWebGpuUploads();
        const t0 = performance.now();
        const x = run();
        // Synchronous backends have finished here; others are made to finish one value.
        const one = sync ? null : tf.slice(x, [0, 0], [1, 1]);
        const host = performance.now() - t0;
        if (one) await one.data();
        tf.dispose([x, ...(one ? [one] : [])]);
        const ms = performance.now() - t0;
        counter?.stop();
        if (counter) uploaded.set(name, counter.count);
        if (r > 0) {
          // round 0 warms up (JIT, heap growth)
          times.get(name)!.push(ms);
          hostTimes.get(name)!.push(host);
        }
      }
    }
    const ref = median(times.get('float32')!);
    for (const [name] of paths) {
      const ms = median(times.get(name)!);
      process.stdout.write(
        `${JSON.stringify({
          bench: 'upload',
          backend,
          path: name,
          default_for_backend: name === 'float32' || name === `uint8:${pixelUploadFor(tf.getBackend())}`,
          batch_size: n,
          ms_per_batch: Number(ms.toFixed(2)),
          host_ms: Number(median(hostTimes.get(name)!).toFixed(2)),
          vs_float32_batch: Number((ms / ref).toFixed(2)),
          ns_per_pixel: Number(((ms * 1e6) / (n * d)).toFixed(3)),
          upload_bytes_per_pixel: BYTES[backend]?.[name] ?? null,
          ...(uploaded.has(name)
            ? {
                upload_bytes_per_batch: uploaded.get(name)!.tensorBytes,
                measured_bytes_per_pixel: Number((uploaded.get(name)!.tensorBytes / (n * d)).toFixed(4)),
                uniform_bytes_per_batch: uploaded.get(name)!.writeBufferBytes,
              }
            : {}),
          rounds,
        })}\n`,
      );
    }
  }
}
