import { join } from 'node:path';
import t from 'tap';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../../src/pipeline/sources/synthetic.ts';
import { openWebDataset } from '../../../src/pipeline/sources/webdataset-source.ts';
import { TarWriter } from '../../../src/pipeline/webdataset/tar-writer.ts';
import { encodeCls } from '../../../src/pipeline/webdataset/codecs.ts';
import { colourImage, rawTar, writeFile } from '../../helpers/fixtures.ts';
import { readDataset, readIndex } from '../../helpers/read-shards.ts';
import { tempDir } from '../../helpers/tmp.ts';

const opts = (out: string) => ({ out, res: 8, resize: 'max-side' as const, encoding: 'raw' as const, quality: 90, samplesPerShard: 7, workers: 2, seed: 0, split: 'train', valFraction: 0, command: 't' });

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
  t.same(after.map((s) => s.label), before.map((s) => s.label), 'order and labels kept');
  t.same(after[0]!.shape, [8, 8, 3]);
  t.same(readIndex(second)['classes'], readIndex(first)['classes']);
  t.same(readIndex(second).shardlist.map((s) => s.nsamples), [7, 7, 6]);
});

t.test('reads foreign shards by brace pattern: jpg members, uppercase extensions, label from cls', async (t) => {
  const dir = tempDir(t);
  for (let s = 0; s < 2; s++) {
    const entries = [];
    for (let i = 0; i < 3; i++) {
      entries.push({ name: `img${s}${i}.JPG`, data: await colourImage(12, 6, [200, 10 * i, 0], 'jpeg') }, { name: `img${s}${i}.cls`, data: encodeCls(s * 3 + i) });
    }
    writeFile(join(dir, `foreign-${String(s).padStart(2, '0')}.tar`), rawTar(entries));
  }
  const src = await openWebDataset([join(dir, 'foreign-{00..01}.tar')]);
  t.equal(src.count, null, 'no index: count unknown');
  const out = join(dir, 'out');
  await runShardJob(src, { ...opts(out), samplesPerShard: 4 });
  const samples = await readDataset(out);
  t.same(samples.map((s) => s.label), [0, 1, 2, 3, 4, 5]);
  t.same(samples[0]!.shape, [4, 8, 3]);
  t.same(readIndex(out)['classes'], ['0', '1', '2', '3', '4', '5'], 'class names made from the labels seen');
});

t.test('a sample without an image member is a clear error naming shard and key', async (t) => {
  const dir = tempDir(t);
  const w = new TarWriter(join(dir, 'bad.tar'));
  await w.write({ key: 'k1', members: { cls: encodeCls(1), txt: Buffer.from('hello') } });
  await w.close();
  const src = await openWebDataset([join(dir, 'bad.tar')]);
  await t.rejects(runShardJob(src, opts(join(dir, 'out'))), /bad\.tar#k1: sample has no image member/);
});
