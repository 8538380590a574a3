import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openCifar } from '../../../src/pipeline/sources/cifar.ts';
import { writeFile } from '../../helpers/fixtures.ts';
import { readDataset } from '../../helpers/read-shards.ts';
import { tempDir } from '../../helpers/tmp.ts';

/** Record i: label i % 10 (fine label (i*3)%100 for CIFAR-100), R plane = i, G = 100 + i, B = 200. */
function records(n: number, labelBytes: 1 | 2, from = 0): Buffer {
  const size = labelBytes + 3072;
  const out = Buffer.alloc(n * size);
  for (let k = 0; k < n; k++) {
    const i = from + k;
    const r = k * size;
    if (labelBytes === 1) out[r] = i % 10;
    else {
      out[r] = i % 20;
      out[r + 1] = (i * 3) % 100;
    }
    out.fill(i % 256, r + labelBytes, r + labelBytes + 1024);
    out.fill((100 + i) % 256, r + labelBytes + 1024, r + labelBytes + 2048);
    out.fill(200, r + labelBytes + 2048, r + labelBytes + 3072);
    out[r + labelBytes + 1] = 7; // R at (row 0, col 1): checks the plane -> interleaved order
  }
  return out;
}

const names10 = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

t.test('CIFAR-10 tarball: train batches, class names, planes -> HWC', async (t) => {
  const dir = tempDir(t);
  const top = join(dir, 'cifar-10-batches-bin');
  for (let b = 1; b <= 5; b++) writeFile(join(top, `data_batch_${b}.bin`), records(3, 1, (b - 1) * 3));
  writeFile(join(top, 'test_batch.bin'), records(2, 1, 100));
  writeFile(join(top, 'batches.meta.txt'), `${names10.join('\n')}\n\n`);
  execFileSync('tar', ['-czf', join(dir, 'cifar-10-binary.tar.gz'), '-C', dir, 'cifar-10-batches-bin']);
  const src = await openCifar(join(dir, 'cifar-10-binary.tar.gz'), { variant: 'cifar10', split: 'train' });
  t.equal(src.count, 15);
  t.same(src.classes, names10);
  const test = await openCifar(top, { variant: 'cifar10', split: 'test' });
  t.equal(test.count, 2, 'folder input, test split');
  const out = join(dir, 'out');
  await runShardJob(src, {
    out,
    res: 64,
    resize: 'max-side',
    encoding: 'raw',
    quality: 90,
    samplesPerShard: 100,
    workers: 1,
    seed: 0,
    split: 'train',
    valFraction: 0,
    command: 't',
  });
  const samples = await readDataset(out);
  t.equal(samples.length, 15);
  for (const s of samples) {
    t.same(s.shape, [32, 32, 3], '32x32 never upscaled by max-side');
    const i = s.pixels![0]!; // R of pixel (0,0) is the record number
    t.equal(s.label, i % 10);
    t.same([...s.pixels!.subarray(0, 6)], [i, 100 + i, 200, 7, 100 + i, 200], 'interleaved RGB, pixel (0,1) has R=7');
  }
});

t.test('CIFAR-100: fine labels by default, coarse on request; center-crop upscales to res', async (t) => {
  const dir = tempDir(t);
  writeFile(join(dir, 'cifar-100-binary', 'train.bin'), records(4, 2));
  writeFile(join(dir, 'cifar-100-binary', 'fine_label_names.txt'), Array.from({ length: 100 }, (_, i) => `f${i}`).join('\n'));
  writeFile(join(dir, 'cifar-100-binary', 'coarse_label_names.txt'), Array.from({ length: 20 }, (_, i) => `c${i}`).join('\n'));
  const fine = await openCifar(dir, { variant: 'cifar100', split: 'train' });
  t.same([...(await fine.load([0, 1, 2, 3])).pixels!.labels], [0, 3, 6, 9]);
  t.equal(fine.classes.length, 100);
  const coarse = await openCifar(dir, { variant: 'cifar100', split: 'train', labels: 'coarse' });
  t.same([...(await coarse.load([0, 1, 2, 3])).pixels!.labels], [0, 1, 2, 3]);
  t.equal(coarse.classes[3], 'c3');
  const out = join(dir, 'out');
  await runShardJob(fine, {
    out,
    res: 64,
    resize: 'center-crop',
    encoding: 'raw',
    quality: 90,
    samplesPerShard: 100,
    workers: 1,
    seed: 0,
    split: 'train',
    valFraction: 0,
    command: 't',
  });
  const samples = await readDataset(out);
  t.same(samples[0]!.shape, [64, 64, 3]);
});

t.test('not a CIFAR dataset: clear errors', async (t) => {
  const dir = tempDir(t);
  writeFile(join(dir, 'x', 'data_batch_1.bin'), records(1, 1));
  await t.rejects(openCifar(join(dir, 'x'), { variant: 'cifar10', split: 'train' }), /missing data_batch_2\.bin/);
  writeFile(join(dir, 'y', 'test_batch.bin'), Buffer.alloc(3000));
  await t.rejects(openCifar(join(dir, 'y'), { variant: 'cifar10', split: 'test' }), /not a multiple of the 3073-byte record/);
  await t.rejects(openCifar(join(dir, 'nope'), { variant: 'cifar10', split: 'test' }), /nope: cifar10 input does not exist/);
});
