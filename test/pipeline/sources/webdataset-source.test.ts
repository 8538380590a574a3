import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../../src/pipeline/sources/synthetic.ts';
import { openWebDataset } from '../../../src/pipeline/sources/webdataset-source.ts';
import { encodeCls } from '../../../src/pipeline/webdataset/codecs.ts';
import { colourImage, rawTar, writeFile } from '../../helpers/fixtures.ts';
import { readDataset, readIndex } from '../../helpers/read-shards.ts';
import { tempDir } from '../../helpers/tmp.ts';

const opts = (out: string) => ({
  out,
  res: 8,
  resize: 'max-side' as const,
  encoding: 'raw' as const,
  quality: 90,
  samplesPerShard: 7,
  workers: 2,
  seed: 0,
  split: 'train',
  valFraction: 0,
  command: 't',
});

t.test('re-shards our own shards through the index: same images, new resolution', async (t) => {
  const dir = tempDir(t);
  const first = join(dir, 'a');
  await runShardJob(openSynthetic({ count: 20, numClasses: 4, width: 16, height: 16, seed: 3 }), { ...opts(first), res: 16 });
  const src = await openWebDataset([join(first, 'index.json')]);
  t.equal(src.count, 20);
  t.equal(src.classes.length, 4);
  const second = join(dir, 'b');
  await runShardJob(src, opts(second));
  const before = await readDataset(first);
  const after = await readDataset(second);
  t.equal(after.length, 20);
  t.same(
    after.map((s) => s.label),
    before.map((s) => s.label),
    'order and labels kept',
  );
  t.same(after[0]!.shape, [8, 8, 3]);
  t.same(readIndex(second)['classes'], readIndex(first)['classes']);
  t.same(
    readIndex(second).shardlist.map((s) => s.nsamples),
    [7, 7, 6],
  );
});

t.test('reads foreign shards by brace pattern: jpg members, uppercase extensions, label from cls', async (t) => {
  const dir = tempDir(t);
  for (let s = 0; s < 2; s++) {
    const entries = [];
    for (let i = 0; i < 3; i++) {
      entries.push(
        { name: `img${s}${i}.JPG`, data: await colourImage(12, 6, [200, 10 * i, 0], 'jpeg') },
        { name: `img${s}${i}.cls`, data: encodeCls(s * 3 + i) },
      );
    }
    writeFile(join(dir, `foreign-${String(s).padStart(2, '0')}.tar`), rawTar(entries));
  }
  const src = await openWebDataset([join(dir, 'foreign-{00..01}.tar')]);
  t.equal(src.count, null, 'no index: count unknown');
  const out = join(dir, 'out');
  await runShardJob(src, { ...opts(out), samplesPerShard: 4 });
  const samples = await readDataset(out);
  t.same(
    samples.map((s) => s.label),
    [0, 1, 2, 3, 4, 5],
  );
  t.same(samples[0]!.shape, [4, 8, 3]);
  t.same(readIndex(out)['classes'], ['0', '1', '2', '3', '4', '5'], 'class names made from the labels seen');
});

t.test('bad samples are skipped and listed in errors.jsonl, as every other source does', async (t) => {
  const dir = tempDir(t);
  const img = await colourImage(8, 8, [10, 20, 30], 'png');
  writeFile(
    join(dir, 'mixed.tar'),
    rawTar([
      { name: 'a.cls', data: encodeCls(1) },
      { name: 'a.png', data: img },
      { name: 'b.cls', data: encodeCls(2) },
      { name: 'b.txt', data: Buffer.from('no image here') },
      { name: 'c.cls', data: encodeCls(0) },
      { name: 'c.png', data: new Uint8Array(0), typeflag: '2', linkname: 'a.png' },
      { name: 'd.cls', data: Buffer.from('cat') },
      { name: 'd.png', data: img },
      { name: 'e.cls', data: encodeCls(99999999999) },
      { name: 'e.png', data: img },
      { name: 'f.cls', data: encodeCls(3) },
      { name: 'f.png', data: img },
    ]),
  );
  const out = join(dir, 'out');
  const summary = await runShardJob(await openWebDataset([join(dir, 'mixed.tar')]), opts(out));
  t.equal(summary.errors, 4);
  const samples = await readDataset(out);
  t.same(
    samples.map((s) => s.label),
    [1, 3],
    'the good samples, in order',
  );
  const errors = readFileSync(join(out, 'errors.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { file: string; reason: string });
  t.same(
    errors.map((e) => e.file.replace(/^.*#/, '')),
    ['b', 'c', 'd', 'e'],
  );
  t.match(errors[0]!.reason, /no image member/);
  t.match(errors[1]!.reason, /no image member .*links carry no data/);
  t.match(errors[2]!.reason, /class label "cat" is not an integer/);
  t.match(errors[3]!.reason, /class label 99999999999 is out of range \[0, 1048576\)/);
  t.same(readIndex(out)['num_classes'], 4, 'classes follow the labels that were kept');
});
