import t from 'tap';
import type { Batch } from '../../src/shared/data-feed.ts';
import { MemoryFeed, syntheticArrays } from '../../src/train/memory-feed.ts';

async function collect(it: AsyncIterable<Batch>): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of it) out.push(b);
  return out;
}

const N = 10;
const images = Float32Array.from({ length: N * 2 * 1 * 1 }, (_, i) => i); // sample s = [2s, 2s+1]
const labels = Int32Array.from({ length: N }, (_, i) => i % 3);

t.test('in order: views, last partial batch kept unless dropLast', async (t) => {
  const f = new MemoryFeed({ images, labels, channels: 2, res: 1, numClasses: 3, batchSize: 4 });
  t.equal(f.stepsPerEpoch(), 3);
  const bs = await collect(f.epoch(0));
  t.same(
    bs.map((b) => b.n),
    [4, 4, 2],
  );
  t.same(
    bs.map((b) => b.step),
    [0, 1, 2],
  );
  t.same(Array.from(bs[2]!.images), [16, 17, 18, 19]);
  t.equal(bs[0]!.images.buffer, images.buffer, 'a view, like a ring slot');
  t.match(bs[0]!, { channels: 2, height: 1, width: 1, epoch: 0 });
  bs[0]!.release();
  const dropped = new MemoryFeed({ images, labels, channels: 2, res: 1, numClasses: 3, batchSize: 4, dropLast: true });
  t.equal(dropped.stepsPerEpoch(), 2);
  t.same(f.info, { numSamples: 10, numClasses: 3, classes: ['0', '1', '2'], channels: 2, res: 1 });
});

t.test('shuffled: a seeded permutation per epoch, resumable from any step', async (t) => {
  const f = new MemoryFeed({ images, labels, channels: 2, res: 1, numClasses: 3, batchSize: 3, shuffle: true, seed: 5 });
  t.equal(f.stepsPerEpoch(), 3, 'drops the last partial batch by default when shuffling');
  const e0 = await collect(f.epoch(0));
  const e1 = await collect(f.epoch(1));
  const ids = (bs: Batch[]): number[] => bs.flatMap((b) => Array.from({ length: b.n }, (_, i) => b.images[2 * i]! / 2));
  t.notSame(ids(e0), ids(e1), 'epochs differ');
  t.same(ids(e0), ids(await collect(f.epoch(0))), 'same epoch, same order');
  t.same(ids(await collect(f.epoch(0, 1))), ids(e0).slice(3), 'epoch(e, k) = the tail of epoch(e)');
  for (const b of e0) for (let i = 0; i < b.n; i++) t.equal(b.labels[i], (b.images[2 * i]! / 2) % 3, 'labels follow their images');
  t.same(new Set(ids(e0)).size, 9, 'no repeats');
});

t.test('validation of inputs', async (t) => {
  t.throws(() => new MemoryFeed({ images, labels, channels: 3, res: 1, numClasses: 3, batchSize: 2 }), /image values/);
  t.throws(() => new MemoryFeed({ images, labels, channels: 2, res: 1, numClasses: 2, batchSize: 2 }), /outside \[0, 2\)/);
  t.throws(() => new MemoryFeed({ images, labels, channels: 2, res: 1, numClasses: 3, batchSize: 0 }), RangeError);
  const f = new MemoryFeed({ images, labels, channels: 2, res: 1, numClasses: 3, batchSize: 2 });
  await f.close();
  t.throws(() => f.epoch(0), /after close/);
});

t.test('synthetic arrays: shapes, label range, shared task across seeds', async (t) => {
  const a = syntheticArrays(50, 3, 2, 4, 1);
  const b = syntheticArrays(50, 3, 2, 4, 2);
  t.equal(a.images.length, 50 * 12);
  t.ok(a.labels.every((y) => y >= 0 && y < 4));
  t.notSame(Array.from(a.images.subarray(0, 12)), Array.from(b.images.subarray(0, 12)));
  t.same(Array.from(syntheticArrays(50, 3, 2, 4, 1).images.subarray(0, 24)), Array.from(a.images.subarray(0, 24)), 'seeded');
});
