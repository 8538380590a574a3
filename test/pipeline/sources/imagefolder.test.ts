import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openImageFolder } from '../../../src/pipeline/sources/imagefolder.ts';
import { colourImage, writeFile } from '../../helpers/fixtures.ts';
import { readDataset, readIndex } from '../../helpers/read-shards.ts';
import { tempDir } from '../../helpers/tmp.ts';

const opts = (out: string) => ({
  out,
  res: 8,
  resize: 'max-side' as const,
  encoding: 'raw' as const,
  quality: 90,
  samplesPerShard: 100,
  workers: 2,
  seed: 1,
  split: 'train',
  valFraction: 0,
  command: 't',
});

t.test('classes are sorted folder names; nested and every format read; hidden files ignored', async (t) => {
  const root = tempDir(t);
  // Class "b" is red, "a" is green, "c" is blue: labels must follow sorted names, not creation order.
  writeFile(join(root, 'b', 'x.jpg'), await colourImage(20, 10, [250, 0, 0], 'jpeg'));
  writeFile(join(root, 'b', 'deeper', 'y.png'), await colourImage(10, 20, [250, 0, 0], 'png'));
  writeFile(join(root, 'a', 'z.webp'), await colourImage(8, 8, [0, 250, 0], 'webp'));
  writeFile(join(root, 'a', 'w.tiff'), await colourImage(4, 6, [0, 250, 0], 'tiff'));
  writeFile(join(root, 'c', 'v.gif'), await colourImage(16, 16, [0, 0, 250], 'gif'));
  writeFile(join(root, 'c', '.DS_Store'), 'junk');
  writeFile(join(root, '.hidden', 'q.png'), await colourImage(4, 4, [1, 2, 3], 'png'));
  const src = await openImageFolder(root);
  t.same(src.classes, ['a', 'b', 'c']);
  t.equal(src.count, 5);
  const out = join(root, 'out');
  await runShardJob(src, opts(out));
  const samples = await readDataset(out);
  t.equal(samples.length, 5);
  const shapes = samples.map((s) => `${s.label}:${s.shape!.join('x')}`).sort();
  // 20x10 -> 8x4 (max side 8), 10x20 -> 4x8, 8x8 and 4x6 unchanged, 16x16 -> 8x8.
  t.same(shapes, ['0:6x4x3', '0:8x8x3', '1:4x8x3', '1:8x4x3', '2:8x8x3']);
  for (const s of samples) {
    const [r, g, b] = s.pixels!;
    const dominant = [r!, g!, b!].indexOf(Math.max(r!, g!, b!));
    t.equal(dominant, [1, 0, 2][s.label], `label ${s.label} has its colour`);
  }
  t.same(readIndex(out)['classes'], ['a', 'b', 'c']);
});

t.test('bad files are skipped, recorded in errors.jsonl, and the job continues', async (t) => {
  const root = tempDir(t);
  const good = await colourImage(12, 12, [10, 20, 30], 'jpeg');
  writeFile(join(root, 'k', 'good.jpg'), good);
  writeFile(join(root, 'k', 'empty.jpg'), '');
  writeFile(join(root, 'k', 'truncated.jpg'), good.subarray(0, good.length >> 1));
  writeFile(join(root, 'k', 'notes.txt'), 'not an image at all');
  writeFile(join(root, 'k', 'random.png'), Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 37) % 256)));
  const out = join(root, 'out');
  const summary = await runShardJob(await openImageFolder(root), opts(out));
  t.equal(summary.errors, 4);
  const samples = await readDataset(out);
  t.equal(samples.length, 1, 'only the good image is written');
  const errors = readFileSync(join(out, 'errors.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { file: string; reason: string; shard: string });
  t.same(errors.map((e) => e.file.split('/').pop()).sort(), ['empty.jpg', 'notes.txt', 'random.png', 'truncated.jpg']);
  for (const e of errors) {
    t.ok(e.reason.length > 3, `reason given for ${e.file}: ${e.reason}`);
    t.equal(e.shard, 'train-000000.tar');
  }
  const index = readIndex(out);
  t.equal(index['skipped'], 4);
  t.equal(index.shardlist[0]!.nsamples, 1);
});

t.test('fixed class list; folders outside it are reported; --min-per-class drops rare classes', async (t) => {
  const root = tempDir(t);
  const img = await colourImage(4, 4, [9, 9, 9], 'png');
  for (const [cls, n] of [
    ['a', 1],
    ['b', 3],
    ['c', 2],
  ] as const) {
    for (let i = 0; i < n; i++) writeFile(join(root, cls, `${i}.png`), img);
  }
  const fixed = await openImageFolder(root, { classes: ['c', 'b'] });
  t.same(fixed.classes, ['c', 'b']);
  t.same((await fixed.load([0, 1, 2, 3, 4])).items.map((i) => i.label).sort(), [0, 0, 1, 1, 1]);
  t.match(fixed.listingErrors[0]!.reason, /not in the given class list/);
  const rare = await openImageFolder(root, { minPerClass: 2 });
  t.same(rare.classes, ['b', 'c']);
  t.equal(rare.count, 5);
  t.match(rare.listingErrors[0], { file: join(root, 'a'), reason: /1 images < --min-per-class 2/ });
});

t.test('missing or empty roots are clear errors', async (t) => {
  const root = tempDir(t);
  await t.rejects(openImageFolder(join(root, 'nope')), /nope: image folder does not exist/);
  await t.rejects(openImageFolder(root), /no class subfolders/);
  writeFile(join(root, 'a', '.keep'), '');
  await t.rejects(openImageFolder(root), /no images found/);
});
