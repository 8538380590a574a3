import { join } from 'node:path';
import t from 'tap';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openImageNet, parseLabels } from '../../../src/pipeline/sources/imagenet.ts';
import { openImageNet21k } from '../../../src/pipeline/sources/imagenet21k.ts';
import { colourImage, rawTar, writeFile } from '../../helpers/fixtures.ts';
import { readDataset } from '../../helpers/read-shards.ts';
import { tempDir } from '../../helpers/tmp.ts';

/** A synset tar as distributed: plain JPEG members named <synset>_<n>.JPEG. */
function synsetTar(synset: string, images: Buffer[]): Buffer {
  return rawTar(images.map((data, i) => ({ name: `${synset}_${i}.JPEG`, data })));
}

t.test('ImageNet-21k: synset tars and folders mixed, sorted synsets, --min-per-class', async (t) => {
  const root = tempDir(t);
  const red = await colourImage(40, 30, [240, 10, 10], 'jpeg');
  const blue = await colourImage(30, 40, [10, 10, 240], 'jpeg');
  writeFile(join(root, 'n02000000.tar'), synsetTar('n02000000', [red, red, red]));
  writeFile(join(root, 'n01000000', 'n01000000_1.JPEG'), blue);
  writeFile(join(root, 'n01000000', 'n01000000_2.JPEG'), blue);
  writeFile(join(root, 'n03000000.tar'), synsetTar('n03000000', [red]));
  const all = await openImageNet21k(root);
  t.same(all.classes, ['n01000000', 'n02000000', 'n03000000']);
  t.equal(all.count, 6);
  const src = await openImageNet21k(root, { minPerClass: 2 });
  t.same(src.classes, ['n01000000', 'n02000000']);
  t.equal(src.count, 5);
  t.match(src.listingErrors, [{ file: join(root, 'n03000000.tar'), reason: /1 images < --min-per-class 2/ }]);
  const out = join(root, 'out');
  await runShardJob(src, {
    out,
    res: 8,
    resize: 'max-side',
    encoding: 'raw',
    quality: 90,
    samplesPerShard: 3,
    workers: 2,
    seed: 0,
    split: 'train',
    valFraction: 0,
    command: 't',
  });
  const samples = await readDataset(out);
  t.equal(samples.length, 5);
  for (const s of samples) {
    t.same(s.shape, s.label === 0 ? [8, 6, 3] : [6, 8, 3]);
    const [r, , b] = s.pixels!;
    t.ok(s.label === 0 ? b! > 200 && r! < 50 : r! > 200 && b! < 50, 'pixels read from the right member');
  }
});

t.test('ImageNet val: labels from LOC_val_solution.csv or "<file> <synset>" lines', async (t) => {
  const root = tempDir(t);
  const img = await colourImage(8, 8, [50, 60, 70], 'jpeg');
  writeFile(join(root, 'val', 'ILSVRC2012_val_00000001.JPEG'), img);
  writeFile(join(root, 'val', 'ILSVRC2012_val_00000002.JPEG'), img);
  writeFile(join(root, 'val', 'ILSVRC2012_val_00000003.JPEG'), img);
  writeFile(
    join(root, 'LOC_val_solution.csv'),
    'ImageId,PredictionString\nILSVRC2012_val_00000001,n09000000 1 2 3 4 n09000000 5 6 7 8\nILSVRC2012_val_00000002,n01000000 1 2 3 4\n',
  );
  const src = await openImageNet(join(root, 'val'), { labels: join(root, 'LOC_val_solution.csv') });
  t.same(src.classes, ['n01000000', 'n09000000']);
  t.equal(src.count, 2);
  t.same(
    (await src.load([0, 1])).items.map((i) => i.label),
    [1, 0],
  );
  t.match(src.listingErrors, [{ reason: /no entry in the labels file/ }]);
  const byName = parseLabels('ILSVRC2012_val_00000003.JPEG n05000000\n# comment\n', 'l.txt');
  t.same([...byName.entries()], [['ILSVRC2012_val_00000003', 'n05000000']]);
  t.throws(() => parseLabels('only-one-token\n', 'l.txt'), /l\.txt: line 1: expected/);
  const fixed = await openImageNet(join(root, 'val'), { labels: join(root, 'LOC_val_solution.csv'), classes: ['n01000000', 'n05000000', 'n09000000'] });
  t.same(
    (await fixed.load([0, 1])).items.map((i) => i.label),
    [2, 0],
    'labels follow the given class list',
  );
  const out = join(root, 'out');
  await runShardJob(src, {
    out,
    res: 8,
    resize: 'max-side',
    encoding: 'jpeg',
    quality: 90,
    samplesPerShard: 3,
    workers: 1,
    seed: 0,
    split: 'val',
    valFraction: 0,
    command: 't',
  });
  t.equal((await readDataset(out)).length, 2);
});
