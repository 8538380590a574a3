// uint8 batches normalised on the device: every upload path gives the float32 frame's values, bit
// for bit where the loader did not resample, within half a pixel step (plus the uint8 kernel's
// fixed-point error) where it did.
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { normalisation } from '../../src/pipeline/augment/normalisation.ts';
import { uint8StepBound } from '../helpers/uint8-bound.ts';
import { Loader, type LoaderOptions } from '../../src/pipeline/loader/loader.ts';
import { runShardJob } from '../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../src/pipeline/sources/synthetic.ts';
import type { Batch } from '../../src/shared/data-feed.ts';
import { batchInput, pixelScaleBias, pixelUploadFor, type PixelUpload } from '../../src/train/normalize-batch.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';

// Shards read through the real loader, as float32 frames and as uint8 frames, all before the first
// subtest is declared (tap removes the folder when the file's tests end; and a loader consumed at
// the top level while subtests already ran was seen to stall under tap).
const dir = tempDir(t);
async function shards(name: string, w: number, h: number, encoding: 'raw' | 'jpeg'): Promise<string> {
  const out = join(dir, name);
  await runShardJob(openSynthetic({ count: 96, numClasses: 4, width: w, height: h, seed: 4 }), {
    out,
    res: Math.max(w, h),
    resize: 'max-side',
    encoding,
    quality: 90,
    samplesPerShard: 40,
    workers: 1,
    seed: 4,
    split: 'train',
    valFraction: 0,
    command: 't',
  });
  return out;
}
const square = await shards('square', 16, 16, 'raw');
const oblong = await shards('oblong', 20, 14, 'jpeg');

type Held = Pick<Batch, 'n' | 'channels' | 'height' | 'width' | 'images' | 'pixelStats'>;

/** Copies of every batch of epoch `epoch` (the loader's output does not depend on the backend). */
async function batches(o: LoaderOptions, epoch: number): Promise<Held[]> {
  const loader = await Loader.open(o);
  try {
    const out: Held[] = [];
    for await (const b of loader.epoch(epoch)) {
      out.push({
        n: b.n,
        channels: b.channels,
        height: b.height,
        width: b.width,
        images: b.images.slice(),
        ...(b.pixelStats ? { pixelStats: b.pixelStats } : {}),
      });
      b.release();
    }
    return out;
  } finally {
    await loader.close();
  }
}

/** The model inputs of held batches on the current backend. */
function inputs(held: Held[]): Float32Array[] {
  return held.map((b) => {
    const x = batchInput(b);
    const v = (x.dataSync() as Float32Array).slice();
    x.dispose();
    return v;
  });
}

const exact: [string, Held[], Held[]][] = [];
for (const normalize of ['dataset', 'imagenet'] as const) {
  const o: LoaderOptions = { data: square, batchSize: 40, mode: 'eval', workers: 1, normalize };
  exact.push([normalize, await batches(o, 0), await batches({ ...o, frameDtype: 'uint8' }, 0)]);
}
const CASES: LoaderOptions[] = [
  { data: square, batchSize: 32, mode: 'train', seed: 3, workers: 2, res: 16 },
  { data: oblong, batchSize: 32, mode: 'train', seed: 5, workers: 1, res: 24 }, // JPEG, enlarged
  { data: oblong, batchSize: 50, mode: 'eval', transform: 'train', seed: 1, workers: 1, res: 20 }, // a TTA view
  { data: oblong, batchSize: 50, mode: 'eval', workers: 1, res: 12 }, // eval centre crop, shrunk
];
const resampled: [LoaderOptions, Held[], Held[]][] = [];
for (const o of CASES) resampled.push([o, await batches(o, 1), await batches({ ...o, frameDtype: 'uint8' }, 1)]);

const f = Math.fround;
const MEAN = [123.675, 116.28, 103.53];
const STD = [58.395, 57.12, 57.375];

// Which uploads each backend takes: its default, and every generic one that must also be right.
const UPLOADS: Record<'cpu' | 'wasm', PixelUpload[]> = { cpu: ['host', 'float32', 'int32'], wasm: ['bool', 'int32', 'float32', 'host'] };

t.test('scale and bias round as the loader kernel rounds them', async (t) => {
  const a = pixelScaleBias(MEAN, STD);
  const b = normalisation(MEAN, STD);
  t.same([...a.scale], [...b.scale]);
  t.same([...a.bias], [...b.bias]);
});

t.test('default uploads by backend name', async (t) => {
  t.equal(pixelUploadFor('wasm'), 'bool');
  t.equal(pixelUploadFor('cpu'), 'host');
  t.equal(pixelUploadFor('webgpu'), 'packed');
  for (const other of ['tensorflow', 'webgl', 'someday']) t.equal(pixelUploadFor(other), 'int32', other);
});

for (const backend of ['cpu', 'wasm'] as const) {
  t.test(`${backend}: every pixel value 0..255 in every channel gives fround(fround(v * scale) + bias)`, async (t) => {
    await useBackend(backend);
    const n = 2;
    const c = 3;
    const hw = 256;
    const pixels = new Uint8Array(n * c * hw);
    for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 7 + (i >> 8)) & 255; // each value once per plane
    const { scale, bias } = pixelScaleBias(MEAN, STD);
    const want = new Float32Array(pixels.length);
    for (let i = 0; i < pixels.length; i++) {
      const ch = Math.floor(i / hw) % c;
      want[i] = f(f(pixels[i]! * scale[ch]!) + bias[ch]!);
    }
    for (const how of UPLOADS[backend]) {
      const before = tf.memory().numTensors;
      const x = batchInput({ n, channels: c, height: 16, width: 16, images: pixels, pixelStats: { mean: MEAN, std: STD } }, undefined, how);
      t.same(x.shape, [n, c * hw]);
      t.equal(x.dtype, 'float32');
      const got = x.dataSync() as Float32Array;
      let bad = 0;
      for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) bad++;
      t.equal(bad, 0, `${how} upload: all ${want.length} values exact`);
      x.dispose();
      t.equal(tf.memory().numTensors, before, `${how}: nothing left behind`);
    }
    // The pixels are not read after the call: the upload copied them (or the backend's conversion did).
    const copy = pixels.slice();
    const x = batchInput({ n, channels: c, height: 16, width: 16, images: copy, pixelStats: { mean: MEAN, std: STD } });
    copy.fill(0);
    t.equal((x.dataSync() as Float32Array)[1], want[1]);
    x.dispose();
  });
}

t.test('malformed batches are refused', async (t) => {
  await useBackend('cpu');
  const base = { n: 1, channels: 3, height: 1, width: 2 };
  t.throws(() => batchInput({ ...base, images: new Uint8Array(6) }), { name: 'BatchError', message: /pixelStats/ });
  t.throws(() => batchInput({ ...base, images: new Uint8Array(6), pixelStats: { mean: [1], std: [1] } }), { name: 'BatchError' });
  t.throws(() => batchInput({ ...base, images: new Float32Array(6), pixelStats: { mean: MEAN, std: STD } }), {
    name: 'BatchError',
    message: /uint8 images only/,
  });
  t.throws(() => batchInput({ ...base, images: new Uint8Array(5), pixelStats: { mean: MEAN, std: STD } }), { name: 'BatchError', message: /5 image values/ });
});

for (const backend of ['cpu', 'wasm'] as const) {
  t.test(`${backend}: eval at the stored size (no resampling) - uint8 frames give the float32 frames' values bit for bit`, async (t) => {
    await useBackend(backend);
    for (const [normalize, fa, fb] of exact) {
      t.ok(
        fb.every((b) => b.images instanceof Uint8Array && b.pixelStats),
        'uint8 batches with their statistics',
      );
      const a = inputs(fa);
      const b = inputs(fb);
      t.equal(b.length, 3, 'two full batches and a short one');
      let bad = 0;
      let total = 0;
      a.forEach((v, k) =>
        v.forEach((x, i) => {
          total++;
          if (!Object.is(x, b[k]![i])) bad++;
        }),
      );
      t.equal(bad, 0, `${normalize} statistics: ${total} values identical`);
    }
  });

  t.test(`${backend}: resampled train crops and TTA views - within ~0.54/std of float32 (float32 frames normalise unrounded values)`, async (t) => {
    await useBackend(backend);
    for (const [o, fa, fb] of resampled) {
      const std = fb[0]!.pixelStats!.std;
      const a = inputs(fa);
      const b = inputs(fb);
      t.equal(a.length, b.length);
      const d = a[0]!.length / o.batchSize;
      const plane = d / 3;
      let worst = 0;
      let differing = 0;
      a.forEach((v, k) =>
        v.forEach((x, i) => {
          const c = Math.floor((i % d) / plane);
          const steps = Math.abs(x - b[k]![i]!) * std[c]!;
          if (steps > worst) worst = steps;
          if (x !== b[k]![i]) differing++;
        }),
      );
      const what = `${o.mode}/${o.transform ?? o.mode} res ${o.res}`;
      // These crops take at most 3 taps an axis (stored sides 14-20 onto res 12-24).
      const bound = uint8StepBound(3, 3);
      t.ok(worst <= bound, `${what}: at most ${worst.toFixed(5)} pixel steps apart (bound ${bound.toFixed(5)})`);
      t.ok(differing > 0, `${what}: ${differing} values differ (resampled values are rounded in uint8 frames)`);
    }
  });
}
