// Shards held in shared memory (--in-memory): the loader gives byte-identical frames whether its
// workers read samples from the files or view them in memory, for raw, JPEG and PNG members (the
// last through sharp), float32 and uint8, train and eval; it refuses up front, naming the sizes,
// when the shards do not fit; and loadShardsIntoMemory holds exactly the files' bytes.
import { appendFileSync, cpSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Loader, type LoaderOptions } from '../../../src/pipeline/loader/loader.ts';
import { availableMemory, loadShardsIntoMemory, ShardMemoryError } from '../../../src/pipeline/loader/shard-memory.ts';
import type { Encoding } from '../../../src/pipeline/shard/task.ts';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../../src/pipeline/sources/synthetic.ts';
import { colourImage, rawTar } from '../../helpers/fixtures.ts';
import { tempDir } from '../../helpers/tmp.ts';
import { epochFrames } from '../../helpers/loader-frames.ts';

const dir = tempDir(t);

async function dataset(encoding: Encoding): Promise<string> {
  const out = join(dir, encoding);
  await runShardJob(openSynthetic({ count: 70, numClasses: 4, width: 20, height: 14, seed: 5 }), {
    out,
    res: 16,
    resize: 'max-side',
    encoding,
    quality: 90,
    samplesPerShard: 25,
    workers: 1,
    seed: 5,
    split: 'train',
    valFraction: 0,
    command: 't',
  });
  return out;
}
const shardsOf = (d: string): string[] =>
  readdirSync(d)
    .filter((f) => f.endsWith('.tar'))
    .sort()
    .map((f) => join(d, f));

const frames = async (o: LoaderOptions, epoch: number): Promise<Buffer[]> => (await epochFrames(o, epoch)).frames;

t.test('the same frames, byte for byte, from the files and from memory', async (t) => {
  const sets: [string, string][] = [
    ['raw', await dataset('raw')],
    ['jpeg', await dataset('jpeg')],
  ];
  // PNG members take the sharp path, which gets a view of shared memory.
  const png = join(dir, 'png.tar');
  const entries = [];
  for (let i = 0; i < 12; i++) {
    entries.push({ name: `s${String(i).padStart(3, '0')}.png`, data: await colourImage(18 + i, 11 + i, [20 * i, 255 - 9 * i, 7 * i], 'png') });
    entries.push({ name: `s${String(i).padStart(3, '0')}.cls`, data: Buffer.from(String(i % 3)) });
  }
  writeFileSync(png, rawTar(entries));
  sets.push(['png', png]);
  for (const [name, data] of sets) {
    for (const frameDtype of ['float32', 'uint8'] as const) {
      for (const mode of ['train', 'eval'] as const) {
        const o: LoaderOptions = { data, batchSize: 8, mode, seed: 3, workers: 2, taskRows: 4, res: 16, frameDtype };
        const fromFiles = await frames(o, 1);
        const fromMemory = await frames({ ...o, inMemory: true }, 1);
        t.ok(fromFiles.length > 0);
        t.equal(fromMemory.length, fromFiles.length, `${name} ${frameDtype} ${mode}: as many batches`);
        t.ok(
          fromMemory.every((f, k) => f.equals(fromFiles[k]!)),
          `${name} ${frameDtype} ${mode}: every frame identical`,
        );
      }
    }
  }
});

t.test('the loader accounts for and describes the shards it holds', async (t) => {
  const data = join(dir, 'raw');
  const total = shardsOf(data).reduce((a, p) => a + statSync(p).size, 0);
  const loader = await Loader.open({ data, batchSize: 8, mode: 'eval', workers: 1, inMemory: true });
  try {
    t.equal(loader.memory.shardBytes, total);
    t.match(loader.describe(), new RegExp(`\\+ ${(total / 2 ** 20).toFixed(1)} MiB shards in memory \\(loaded in \\d+\\.\\d s\\)`));
  } finally {
    await loader.close();
  }
  const plain = await Loader.open({ data, batchSize: 8, mode: 'eval', workers: 1 });
  t.equal(plain.memory.shardBytes, 0);
  t.notMatch(plain.describe(), /in memory/);
  await plain.close();
});

t.test("a second loader shares the first one's shards (serve --ranks); another dataset's are refused", async (t) => {
  const data = join(dir, 'raw');
  const o: LoaderOptions = { data, batchSize: 8, mode: 'train', seed: 1, workers: 1, world: 2 };
  const a = await Loader.open({ ...o, rank: 0, inMemory: true });
  try {
    const held = a.heldShards!;
    t.same(held.paths, shardsOf(data));
    const b = await Loader.open({ ...o, rank: 1, inMemory: held });
    t.equal(b.heldShards, held, 'the same buffers, not a copy');
    t.equal(b.memory.shardBytes, 0, 'counted once, by the loader that loaded them');
    t.match(b.describe(), /MiB shards in memory \(shared with another loader\)/);
    await b.close();
    t.same(await frames({ ...o, rank: 1, inMemory: held }, 2), await frames({ ...o, rank: 1 }, 2), 'the frames of a loader reading the files');
    await t.rejects(Loader.open({ ...o, data: join(dir, 'jpeg'), inMemory: held }), {
      name: 'LoaderError',
      message:
        /^the shards held in memory \(3, from .*raw\/train-000000\.tar\) are not this dataset's \(3, from .*jpeg\/train-000000\.tar\), or changed since$/,
    });
    // The same paths, one shard rewritten with another size since: refused too.
    const copy = join(dir, 'raw-copy');
    cpSync(data, copy, { recursive: true });
    const c = await Loader.open({ ...o, data: copy, inMemory: true });
    const copyHeld = c.heldShards!;
    await c.close();
    const grown = join(copy, 'train-000001.tar');
    appendFileSync(grown, Buffer.alloc(512));
    await t.rejects(Loader.open({ ...o, data: grown, inMemory: { ...copyHeld, paths: [grown], buffers: [copyHeld.buffers[1]!] } }), {
      name: 'LoaderError',
      message: /or changed since$/,
    });
  } finally {
    await a.close();
  }
  // A loader keeps working on shards whose first loader has closed.
  const first = await Loader.open({ ...o, rank: 1, inMemory: true });
  const held = first.heldShards!;
  await first.close();
  t.same(await frames({ ...o, rank: 1, inMemory: held }, 3), await frames({ ...o, rank: 1 }, 3), 'after the loader that loaded them closed');
});

t.test('shards that do not fit: refused at open, naming what they need and what is available', async (t) => {
  const data = join(dir, 'raw');
  const total = shardsOf(data).reduce((a, p) => a + statSync(p).size, 0);
  const err = await Loader.open({ data, batchSize: 8, mode: 'eval', workers: 1, inMemory: { available: total - 1 } }).then(
    async (l) => void (await l.close()),
    (e: unknown) => e,
  );
  t.ok(err instanceof ShardMemoryError, 'a ShardMemoryError');
  t.equal((err as ShardMemoryError).file, shardsOf(data)[0], 'naming the first shard');
  t.equal(
    (err as Error).message,
    `${shardsOf(data)[0]}: holding the 3 shards in memory needs ${(total / 2 ** 20).toFixed(1)} MiB, and ${((total - 1) / 2 ** 20).toFixed(1)} MiB is available: ` +
      'read them from disk instead (leave out --in-memory), or use a machine with more memory',
  );
  // Exactly enough is enough.
  const loader = await Loader.open({ data, batchSize: 8, mode: 'eval', workers: 1, inMemory: { available: total } });
  t.equal(loader.memory.shardBytes, total);
  await loader.close();
});

t.test('loadShardsIntoMemory: each buffer is its file, progress reaches the total', async (t) => {
  const paths = shardsOf(join(dir, 'jpeg'));
  const seen: [number, number][] = [];
  const m = await loadShardsIntoMemory(paths, { onProgress: (loaded, total) => seen.push([loaded, total]) });
  t.equal(m.buffers.length, paths.length);
  paths.forEach((p, s) => {
    t.ok(m.buffers[s] instanceof SharedArrayBuffer);
    t.ok(Buffer.from(m.buffers[s]!).equals(readFileSync(p)), `${p}: the same bytes`);
  });
  t.equal(
    m.bytes,
    paths.reduce((a, p) => a + statSync(p).size, 0),
  );
  t.equal(seen.length, paths.length);
  t.ok(
    seen.every(([l], k) => k === 0 || l > seen[k - 1]![0]),
    'progress only grows',
  );
  t.same(seen.at(-1), [m.bytes, m.bytes]);
  const missing = join(dir, 'missing.tar');
  await t.rejects(loadShardsIntoMemory([paths[0]!, missing]), {
    name: 'ShardMemoryError',
    file: missing,
    message: new RegExp(`^${missing}: cannot stat it: ENOENT`),
  });
  // A folder where a shard should be: stat works, reading fails; the error names it.
  const folder = join(dir, 'raw');
  const stopped: number[] = [];
  await t.rejects(loadShardsIntoMemory([folder], { onProgress: (l) => stopped.push(l) }), {
    name: 'ShardMemoryError',
    file: folder,
    message: /cannot read it at byte 0: EISDIR/,
  });
  t.same(stopped, [], 'no progress reported for it');
});

t.test('under a memory limit (a container, a Slurm job), the limit less what the process uses is what is available', async (t) => {
  const original = process.constrainedMemory;
  t.teardown(() => {
    process.constrainedMemory = original;
  });
  t.ok(availableMemory() > 0, 'unconstrained here: what the OS reports');
  t.ok(availableMemory() <= totalmem());
  // A limit below what this process already holds: nothing is available.
  process.constrainedMemory = () => 1 << 20;
  t.equal(availableMemory(), 0);
  const data = join(dir, 'raw');
  await t.rejects(loadShardsIntoMemory(shardsOf(data)), {
    name: 'ShardMemoryError',
    message: /holding the 3 shards in memory needs [\d.]+ MiB, and 0\.0 MiB is available/,
  });
  // A limit above the machine's memory is no limit.
  process.constrainedMemory = () => totalmem() * 2;
  t.equal(availableMemory() > 0, true);
});
