// The loader writing uint8 frames: same plan and labels as float32, pixels rounded from the same
// crops, the statistics in every frame, deterministic, 4x smaller image sections.
import { join } from 'node:path';
import { unpack } from 'msgpackr';
import t from 'tap';
import { Loader, type LoaderOptions } from '../../../src/pipeline/loader/loader.ts';
import { readFrame } from '../../../src/pipeline/ring/frame.ts';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../../src/pipeline/sources/synthetic.ts';
import { readIndex } from '../../helpers/read-shards.ts';
import { tempDir } from '../../helpers/tmp.ts';
import { epochFrames } from '../../helpers/loader-frames.ts';
import { uint8StepBound } from '../../helpers/uint8-bound.ts';

const dir = tempDir(t);
const data = join(dir, 'ds');
await runShardJob(openSynthetic({ count: 150, numClasses: 5, width: 16, height: 12, seed: 8 }), {
  out: data,
  res: 16,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 60,
  workers: 1,
  seed: 8,
  split: 'train',
  valFraction: 0,
  command: 't',
});
const opts = (o: Partial<LoaderOptions> = {}): LoaderOptions => ({
  data,
  batchSize: 32,
  mode: 'train',
  seed: 2,
  workers: 2,
  taskRows: 8,
  res: 16,
  frameDtype: 'uint8',
  ...o,
});

const frames = async (o: LoaderOptions, epoch: number): Promise<Buffer[]> => (await epochFrames(o, epoch)).frames;

t.test('uint8 frames: dtype, statistics, one byte a pixel, same samples and labels as float32', async (t) => {
  const u = await frames(opts(), 1);
  const f = await frames(opts({ frameDtype: 'float32' }), 1);
  t.equal(u.length, 4);
  const index = readIndex(data);
  for (let k = 0; k < u.length; k++) {
    const a = readFrame(u[k]!);
    const b = readFrame(f[k]!);
    t.equal(a.dtype, 'uint8');
    if (a.dtype !== 'uint8') continue;
    t.same(a.mean, index['mean'], 'the dataset statistics travel in the frame');
    t.same(a.std, index['std']);
    t.equal(a.images.length, 32 * 3 * 16 * 16);
    t.same(a.keys, b.keys);
    t.same([...a.labels], [...b.labels]);
    t.equal(a.layout.imagesOffset % 64, 0);
    // Rounded pixels of the same crops: within half a step (and the fixed point's error; stored
    // no larger than res, so two taps an axis) of the float32 values.
    let worst = 0;
    for (let i = 0; i < a.images.length; i++) {
      const c = Math.floor(i / 256) % 3;
      worst = Math.max(worst, Math.abs((a.images[i]! - a.mean[c]!) / a.std[c]! - (b.images as Float32Array)[i]!) * a.std[c]!);
    }
    t.ok(worst <= uint8StepBound(2, 2), `batch ${k}: within ${worst.toFixed(5)} pixel steps`);
    const doc = unpack(u[k]!) as Record<string, unknown>;
    t.equal(doc['dtype'], 'uint8', 'msgpackr reads it too');
    t.equal((doc['images'] as Uint8Array).length, 32 * 768);
  }
  t.ok(u[0]!.length * 3 < f[0]!.length, `frame of ${u[0]!.length} bytes vs ${f[0]!.length} as float32`);
});

t.test('uint8 frames are deterministic whatever the workers and task size, and resume exactly', async (t) => {
  const a = await frames(opts({ workers: 1, taskRows: 32 }), 2);
  const b = await frames(opts({ workers: 2, taskRows: 5 }), 2);
  t.same(
    a.map((x) => x.toString('hex')),
    b.map((x) => x.toString('hex')),
  );
  const loader = await Loader.open(opts());
  t.teardown(() => loader.close());
  const tail: string[] = [];
  for await (const x of loader.epoch(2, 2)) {
    tail.push(Buffer.from(x.frame).toString('hex'));
    x.release();
  }
  t.same(
    tail,
    a.slice(2).map((x) => x.toString('hex')),
  );
  t.match(loader.describe(), /3x16x16 uint8/);
  const f32 = await Loader.open(opts({ frameDtype: 'float32' }));
  t.teardown(() => f32.close());
  t.ok(loader.slotBytes * 3 < f32.slotBytes, `ring slot ${loader.slotBytes} bytes vs ${f32.slotBytes}`);
});
