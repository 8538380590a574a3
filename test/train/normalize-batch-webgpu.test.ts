// uint8 batches on the webgpu backend: every upload path gives the exact float32 values. Needs
// the npm packages `webgpu` and `@tensorflow/tfjs-backend-webgpu` and a WebGPU adapter (lavapipe
// will do); skips saying which is missing. The backend is set up here directly (Dawn's globals,
// then the tfjs backend), so this file does not depend on how the trainer selects backends.
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { batchInput, pixelScaleBias, pixelUploadFor, type PixelUpload } from '../../src/train/normalize-batch.ts';

async function setUp(): Promise<string | null> {
  try {
    // Specifiers in variables: the packages are optional here, and the type checker must not need them.
    const dawnName = 'webgpu';
    const backendName = '@tensorflow/tfjs-backend-webgpu';
    const dawn = (await import(dawnName)) as { create(o: string[]): { requestAdapter(): Promise<unknown> }; globals: object };
    Object.assign(globalThis, dawn.globals);
    const gpu = dawn.create([]);
    if (!(await gpu.requestAdapter())) return 'no WebGPU adapter (install mesa-vulkan-drivers from bookworm-backports for lavapipe)';
    (globalThis as { navigator?: unknown }).navigator = { gpu };
    await import(backendName);
    if (!(await tf.setBackend('webgpu'))) return 'tfjs-backend-webgpu did not initialise';
    await tf.ready();
    return null;
  } catch (e) {
    return `webgpu packages not installed (${(e as Error).message.split('\n')[0]})`;
  }
}

const missing = await setUp();

t.test('webgpu: uint8 uploads (packed, bool, int32, float32, host) give fround(fround(v * scale) + bias) exactly', { skip: missing ?? false }, async (t) => {
  t.equal(tf.getBackend(), 'webgpu');
  t.equal(pixelUploadFor(tf.getBackend()), 'packed');
  const mean = [123.675, 116.28, 103.53];
  const std = [58.395, 57.12, 57.375];
  const { scale, bias } = pixelScaleBias(mean, std);
  // Large enough that nothing is handed to the cpu backend (WEBGPU_CPU_FORWARD below 1,000 values).
  const n = 8;
  const c = 3;
  const hw = 1024;
  const pixels = Uint8Array.from({ length: n * c * hw }, (_, i) => (i * 7 + (i >> 8)) & 255);
  const want = Float32Array.from(pixels, (v, i) => {
    const ch = Math.floor(i / hw) % c;
    return Math.fround(Math.fround(v * scale[ch]!) + bias[ch]!);
  });
  for (const how of ['packed', 'bool', 'int32', 'float32', 'host'] as PixelUpload[]) {
    const before = tf.memory().numTensors;
    const x = batchInput({ n, channels: c, height: 32, width: 32, images: pixels, pixelStats: { mean, std } }, undefined, how);
    const got = (await x.data()) as Float32Array;
    x.dispose();
    let bad = 0;
    for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) bad++;
    t.equal(bad, 0, `${how}: all ${want.length} values exact`);
    t.equal(tf.memory().numTensors, before, `${how}: nothing left behind`);
  }
});
