import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openIdx, parseIdx } from '../../../src/pipeline/sources/idx.ts';
import { idxBytes, writeFile } from '../../helpers/fixtures.ts';
import { readDataset, readIndex } from '../../helpers/read-shards.ts';
import { tempDir } from '../../helpers/tmp.ts';

function fixture(dir: string, n: number, gzip: boolean): { images: string; labels: string; pixels: Uint8Array } {
  const pixels = new Uint8Array(n * 4 * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 7) % 256;
  const labels = Uint8Array.from({ length: n }, (_, i) => i % 4);
  const ext = gzip ? '.gz' : '';
  writeFile(join(dir, `images-idx3-ubyte${ext}`), idxBytes([n, 4, 3], pixels, gzip));
  writeFile(join(dir, `labels-idx1-ubyte${ext}`), idxBytes([n], labels, gzip));
  return { images: join(dir, `images-idx3-ubyte${ext}`), labels: join(dir, `labels-idx1-ubyte${ext}`), pixels };
}

t.test('parses header dims and data, gzipped or not', async (t) => {
  const dir = tempDir(t);
  for (const gz of [false, true]) {
    const f = fixture(dir, 6, gz);
    const src = await openIdx(f.images, f.labels);
    t.equal(src.count, 6);
    t.equal(src.channels, 1);
    t.same(src.classes, ['0', '1', '2', '3']);
    const loaded = await src.load([5, 0]);
    t.same([...loaded.pixels!.labels], [1, 0]);
    t.same([...loaded.pixels!.sourceIndex], [5, 0], 'source positions kept for error reports');
    t.same([...loaded.payload!.subarray(0, 12)], [...f.pixels.subarray(60, 72)], 'item 5 pixels first');
  }
});

t.test('idx -> shards keeps images 1-channel, unresized, pixel-exact', async (t) => {
  const dir = tempDir(t);
  const f = fixture(dir, 10, true);
  const out = join(dir, 'out');
  await runShardJob(await openIdx(f.images, f.labels), {
    out,
    res: 64,
    resize: 'max-side',
    encoding: 'raw',
    quality: 90,
    samplesPerShard: 4,
    workers: 1,
    seed: 0,
    split: 'train',
    valFraction: 0,
    command: 't',
  });
  const samples = await readDataset(out);
  t.equal(samples.length, 10);
  t.equal(readIndex(out)['channels'], 1);
  for (const s of samples) {
    t.same(s.shape, [4, 3, 1]);
  }
  const byPixels = new Map(samples.map((s) => [Buffer.from(s.pixels!).toString('hex'), s.label]));
  for (let i = 0; i < 10; i++) {
    const px = Buffer.from(f.pixels.subarray(i * 12, (i + 1) * 12)).toString('hex');
    t.equal(byPixels.get(px), i % 4, `image ${i} stored with its label`);
  }
});

t.test('bad idx files are clear errors naming the file', async (t) => {
  t.throws(() => parseIdx(Buffer.from([0, 0, 0x0d, 3, 0, 0, 0, 1]), 'x.idx'), /x\.idx: not an idx file of uint8/);
  t.throws(() => parseIdx(idxBytes([2, 2, 2], new Uint8Array(8)).subarray(0, 20), 'y.idx'), /y\.idx: truncated/);
  const dir = tempDir(t);
  const f = fixture(dir, 6, false);
  writeFile(join(dir, 'short-labels'), idxBytes([5], new Uint8Array(5)));
  await t.rejects(openIdx(f.images, join(dir, 'short-labels')), /6 images but 5 labels/);
  await t.rejects(openIdx(join(dir, 'missing'), f.labels), /missing: idx file does not exist/);
});

function fashionMnistDir(): string | null {
  try {
    const files = execFileSync('dpkg', ['-L', 'dataset-fashion-mnist'], { encoding: 'utf8' }).split('\n');
    const f = files.find((l) => /train-images-idx3-ubyte(\.gz)?$/.test(l));
    return f && existsSync(f) ? f.replace(/\/[^/]+$/, '') : null;
  } catch {
    return null;
  }
}

const fmnist = fashionMnistDir();
t.test('real Fashion-MNIST (Debian dataset-fashion-mnist)', { skip: fmnist ? false : 'dataset-fashion-mnist is not installed (CI installs it)' }, async (t) => {
  const dir = fmnist!;
  const gz = existsSync(join(dir, 'train-images-idx3-ubyte.gz')) ? '.gz' : '';
  const src = await openIdx(join(dir, `train-images-idx3-ubyte${gz}`), join(dir, `train-labels-idx1-ubyte${gz}`));
  t.equal(src.count, 60000);
  t.equal(src.classes.length, 10);
  const test = await openIdx(join(dir, `t10k-images-idx3-ubyte${gz}`), join(dir, `t10k-labels-idx1-ubyte${gz}`));
  t.equal(test.count, 10000);
});
