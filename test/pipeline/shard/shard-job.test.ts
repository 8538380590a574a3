import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runShardJob, withPath, type ShardJobOptions } from '../../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../../src/pipeline/sources/synthetic.ts';
import { syntheticImage } from '../../../src/pipeline/sources/synthetic-image.ts';
import { readDataset, readIndex } from '../../helpers/read-shards.ts';
import { tempDir } from '../../helpers/tmp.ts';

const base = (out: string): ShardJobOptions => ({
  out,
  res: 16,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 40,
  workers: 2,
  seed: 7,
  split: 'train',
  valFraction: 0,
  command: 'test',
  taskSize: 16,
});

const synth = (count = 100) => openSynthetic({ count, numClasses: 5, width: 16, height: 16, seed: 7 });

function digest(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) {
    if (f.startsWith('.')) continue;
    out[f] = createHash('md5')
      .update(readFileSync(join(dir, f)))
      .digest('hex');
  }
  return out;
}

t.test('writes every item once, in shards of the requested size, with a wids index', async (t) => {
  const out = tempDir(t);
  const summary = await runShardJob(synth(), base(out));
  t.equal(summary.state, 'fresh');
  t.same(readdirSync(out).sort(), [
    'errors.jsonl',
    'index.json',
    'train-000000.idx',
    'train-000000.tar',
    'train-000001.idx',
    'train-000001.tar',
    'train-000002.idx',
    'train-000002.tar',
  ]);
  const index = readIndex(out);
  t.equal(index['__kind__'], 'wids-shard-index-v1');
  t.equal(index['wids_version'], 1);
  t.same(
    index.shardlist.map((s) => s.nsamples),
    [40, 40, 20],
  );
  for (const s of index.shardlist) {
    const bytes = readFileSync(join(out, s.url));
    t.equal(s.filesize, bytes.length, `${s.url} filesize`);
    t.equal(s.md5sum, createHash('md5').update(bytes).digest('hex'), `${s.url} md5`);
    t.equal(bytes.length % 10240, 0, 'archive padded to a 10240-byte record');
  }
  t.equal(index['num_samples'], 100);
  t.equal(index['num_classes'], 5);
  t.equal(index['resolution'], 16);
  t.equal(index['channels'], 3);
  t.equal(index['encoding'], 'raw');
  const samples = await readDataset(out);
  t.equal(samples.length, 100);
  // Keys are the positions in the shuffled order, so they run 0..99 across the shards.
  t.same(
    samples.map((s) => Number(s.key)),
    Array.from({ length: 100 }, (_, i) => i),
  );
  t.same(samples[0]!.exts, ['cls', 'npy']);
  // Shuffled: the first shard mixes classes rather than holding one.
  t.ok(new Set(samples.slice(0, 40).map((s) => s.label)).size === 5, 'first shard holds all classes');
  // The same multiset of images as generated directly (shuffle is a permutation).
  const labels = samples.map((s) => s.label).sort();
  t.same(labels, Array.from({ length: 100 }, (_, i) => i % 5).sort());
  t.same(samples[0]!.shape, [16, 16, 3]);
  t.equal(readFileSync(join(out, 'errors.jsonl'), 'utf8'), '');
});

t.test('stored pixels equal the generated image and the mean/std are those of the stored pixels', async (t) => {
  const out = tempDir(t);
  await runShardJob(synth(30), { ...base(out), samplesPerShard: 100 });
  const samples = await readDataset(out);
  // Find which generated index each sample is by matching bytes.
  const generated = Array.from({ length: 30 }, (_, i) => Buffer.from(syntheticImage(7, i, 5, 16, 16).data).toString('hex'));
  const found = samples.map((s) => generated.indexOf(Buffer.from(s.pixels!).toString('hex')));
  t.notOk(found.includes(-1), 'every stored image is one of the generated images');
  t.equal(new Set(found).size, 30, 'each exactly once');
  const sums = [0, 0, 0];
  const sq = [0, 0, 0];
  let n = 0;
  for (const s of samples) {
    for (let i = 0; i < s.pixels!.length; i++) {
      sums[i % 3]! += s.pixels![i]!;
      sq[i % 3]! += s.pixels![i]! ** 2;
    }
    n += s.pixels!.length / 3;
  }
  const index = readIndex(out);
  const mean = index['mean'] as number[];
  const std = index['std'] as number[];
  for (let c = 0; c < 3; c++) {
    const m = sums[c]! / n;
    t.ok(Math.abs(mean[c]! - m) < 1e-3, `mean[${c}] ${mean[c]} ~ ${m}`);
    t.ok(Math.abs(std[c]! - Math.sqrt(sq[c]! / n - m * m)) < 1e-3, `std[${c}]`);
  }
});

t.test('byte-identical output for the same input and options, whatever the worker count', async (t) => {
  const a = tempDir(t);
  const b = tempDir(t);
  await runShardJob(synth(), base(a));
  await runShardJob(synth(), { ...base(b), workers: 1, taskSize: 7 });
  t.same(digest(a), digest(b));
  const c = tempDir(t);
  await runShardJob(synth(), { ...base(c), seed: 8 });
  t.not(digest(c)['train-000000.tar'], digest(a)['train-000000.tar'], 'another seed shuffles differently');
});

t.test('resumes from complete shards and ends byte-identical to an uninterrupted run', async (t) => {
  const ref = tempDir(t);
  await runShardJob(synth(), base(ref));
  const out = tempDir(t);
  // Interrupt after the first progress report: at most the first shard gets completed.
  const controller = new AbortController();
  await t.rejects(
    runShardJob(synth(), { ...base(out), workers: 1, signal: controller.signal, onProgress: (p) => p.done >= 48 && controller.abort() }),
    /interrupted/,
  );
  t.notOk(existsSync(join(out, 'index.json')), 'no index before the job completes');
  t.notOk(
    readdirSync(out).some((f) => f.includes('.tmp')),
    'no temporary file left behind',
  );
  t.ok(existsSync(join(out, 'train-000000.tar')), 'first shard completed before the interruption');
  let processed = 0;
  const summary = await runShardJob(synth(), { ...base(out), onProgress: (p) => (processed = p.done) });
  t.equal(summary.state, 'resumed');
  t.equal(processed, 60, 'only the two unfinished shards were redone');
  t.same(digest(out), digest(ref));
  const again = await runShardJob(synth(), base(out));
  t.equal(again.state, 'complete', 'a finished job is not redone');
  t.same(digest(out), digest(ref));
});

t.test('a torn shard (record present, tar truncated) is rewritten', async (t) => {
  const ref = tempDir(t);
  await runShardJob(synth(), base(ref));
  const out = tempDir(t);
  const controller = new AbortController();
  await t.rejects(runShardJob(synth(), { ...base(out), workers: 1, signal: controller.signal, onProgress: (p) => p.done >= 48 && controller.abort() }));
  writeFileSync(join(out, 'train-000000.tar'), Buffer.alloc(1024));
  await runShardJob(synth(), base(out));
  t.same(digest(out), digest(ref));
});

t.test('--val-fraction makes two disjoint splits covering every item', async (t) => {
  const out = tempDir(t);
  await runShardJob(synth(), { ...base(out), valFraction: 0.2 });
  const train = await readDataset(out, 'index.json');
  const val = await readDataset(out, 'val.json');
  t.equal(train.length, 80);
  t.equal(val.length, 20);
  t.ok(readdirSync(out).includes('val-000000.tar'));
  const all = [...train, ...val].map((s) => Buffer.from(s.pixels!).toString('hex'));
  t.equal(new Set(all).size, 100, 'no image in both splits');
  t.equal(readIndex(out, 'val.json')['split'], 'val');
});

t.test('--limit and jpeg encoding', async (t) => {
  const out = tempDir(t);
  await runShardJob(synth(), { ...base(out), limit: 10, encoding: 'jpeg', quality: 95 });
  const samples = await readDataset(out);
  t.equal(samples.length, 10);
  t.same(samples[0]!.exts, ['cls', 'jpg']);
  t.same([...samples[0]!.jpg!.subarray(0, 3)], [0xff, 0xd8, 0xff], 'a JPEG');
  t.equal(readIndex(out)['quality'], 95);
});

t.test('refuses to mix with another dataset, and --overwrite replaces it', async (t) => {
  const out = tempDir(t);
  await runShardJob(synth(), base(out));
  await t.rejects(runShardJob(synth(), { ...base(out), res: 8 }), /different dataset/);
  const summary = await runShardJob(synth(), { ...base(out), res: 8, overwrite: true });
  t.equal(summary.state, 'fresh');
  t.equal(readIndex(out)['resolution'], 8);
  const foreign = tempDir(t);
  writeFileSync(join(foreign, 'other.tar'), 'x');
  await t.rejects(runShardJob(synth(), base(foreign)), /not empty/);
  writeFileSync(join(foreign, 'keep.txt'), 'mine');
  await runShardJob(synth(), { ...base(foreign), overwrite: true });
  t.ok(existsSync(join(foreign, 'keep.txt')), '--overwrite leaves files that are not ours');
});

t.test('rejects bad options before writing anything', async (t) => {
  const out = tempDir(t);
  rmSync(out, { recursive: true });
  await t.rejects(runShardJob(synth(), { ...base(out), samplesPerShard: 0 }), /samples-per-shard/);
  await t.rejects(runShardJob(synth(), { ...base(out), valFraction: 1 }), /val-fraction/);
  await t.rejects(runShardJob(synth(), { ...base(out), split: 'a/b' }), /--split/);
  t.notOk(existsSync(out), 'nothing created');
});

t.test('temporaries of a killed run are removed by the rerun, which ends byte-identical', async (t) => {
  const ref = tempDir(t);
  await runShardJob(synth(), base(ref));
  const out = tempDir(t);
  const controller = new AbortController();
  await t.rejects(
    runShardJob(synth(), { ...base(out), workers: 1, signal: controller.signal, onProgress: (p) => p.done >= 48 && controller.abort() }),
    /interrupted/,
  );
  // What a kill -9 in the middle of writes leaves behind.
  for (const f of ['train-000001.tar.tmp', 'train-000001.idx.tmp', '.errors.jsonl.tmp-123-abc1', '.partial/.train-000001.tar.json.tmp-99-zz9'])
    writeFileSync(join(out, f), 'half');
  writeFileSync(join(out, 'notes.txt'), 'mine');
  await runShardJob(synth(), base(out));
  t.same(
    readdirSync(out).filter((f) => f.includes('.tmp')),
    [],
    'no temporaries left',
  );
  t.notOk(existsSync(join(out, '.partial')), 'the job state (and its temporaries) gone once complete');
  t.ok(existsSync(join(out, 'notes.txt')), "other people's files are left alone");
  rmSync(join(out, 'notes.txt'));
  t.same(digest(out), digest(ref));
});

t.test('write errors without a path (ENOSPC on an open handle) name the file being written', async (t) => {
  const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  const named = withPath(enospc, '/data/out/train-000003.tar.tmp') as Error;
  t.equal(named.name, 'ShardJobError');
  t.equal(named.message, '/data/out/train-000003.tar.tmp: ENOSPC: ENOSPC: no space left on device, write (while writing)');
  const withOwnPath = Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES', path: '/x' });
  t.equal(withPath(withOwnPath, '/y'), withOwnPath, 'an error that names its path is kept');
  const other = new RangeError('not an fs error');
  t.equal(withPath(other, '/y'), other);
});
