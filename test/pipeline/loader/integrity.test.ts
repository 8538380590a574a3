// Damaged datasets are errors naming the shard, before any number is reported: a missing shard
// (its .idx kept), a truncated one, one overwritten after sharding (with --verify), an index
// listing no shards; an isolated undecodable sample is replaced and counted with shard and key.
import { cpSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Loader, type LoaderOptions } from '../../../src/pipeline/loader/loader.ts';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../../src/pipeline/sources/synthetic.ts';
import { readIndex } from '../../helpers/read-shards.ts';
import { overwriteMemberData } from '../../helpers/damage-shards.ts';
import { tempDir } from '../../helpers/tmp.ts';

const dir = tempDir(t);
const pristine = join(dir, 'pristine');
await runShardJob(openSynthetic({ count: 120, numClasses: 4, width: 8, height: 8, seed: 2 }), {
  out: pristine,
  res: 8,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 40,
  workers: 1,
  seed: 2,
  split: 'train',
  valFraction: 0,
  command: 't',
});
let copies = 0;
/** A fresh copy of the dataset to damage. */
function copy(): string {
  const d = join(dir, `copy-${copies++}`);
  cpSync(pristine, d, { recursive: true });
  return d;
}
const opts = (data: string, o: Partial<LoaderOptions> = {}): LoaderOptions => ({
  data: join(data, 'index.json'),
  batchSize: 40,
  mode: 'eval',
  workers: 1,
  ...o,
});

t.test('a missing shard (its .idx kept) is an error naming it, at open', async (t) => {
  const d = copy();
  rmSync(join(d, 'train-000001.tar'));
  await t.rejects(Loader.open(opts(d)), { name: 'SampleTableError', message: /train-000001\.tar: shard does not exist \(listed in .*index\.json\)/ });
});

t.test('a truncated shard is an error naming it, with both sizes', async (t) => {
  const d = copy();
  const path = join(d, 'train-000002.tar');
  const size = statSync(path).size;
  truncateSync(path, Math.floor(size / 2));
  await t.rejects(
    Loader.open(opts(d)),
    new RegExp(`train-000002\\.tar: shard is ${Math.floor(size / 2)} bytes, .*index\\.json says ${size}: truncated, overwritten or from another dataset`),
  );
});

t.test('a shard overwritten in place (same size) fails --verify; without it, its first read (the tar headers do not match the .idx)', async (t) => {
  const d = copy();
  const path = join(d, 'train-000000.tar');
  const size = statSync(path).size;
  writeFileSync(path, Buffer.alloc(size, 0x41));
  await t.rejects(
    Loader.open(opts(d, { verify: true })),
    /train-000000\.tar: md5 [0-9a-f]{32} does not match .*index\.json's [0-9a-f]{32}: the shard is damaged or was replaced/,
  );
  const md5 = readIndex(d).shardlist[0]!.md5sum;
  t.match(md5, /^[0-9a-f]{32}$/);
  // Sizes match, so without --verify the damage shows at the first read: no tar header where the
  // .idx puts one. Fatal, not a replaced sample.
  const loader = await Loader.open(opts(d));
  t.teardown(() => loader.close());
  await t.rejects(
    (async () => {
      for await (const b of loader.epoch(0)) b.release();
    })(),
    {
      name: 'LoaderError',
      message: /train-000000\.tar: the index does not match the tar at offset \d+ \(sample "\d{9}", member \.(cls|npy)\): no valid tar header precedes it/,
    },
  );
  t.equal(loader.replaced().count, 0);
});

t.test('payloads overwritten, tar headers intact: every sample is replaced and counted', async (t) => {
  const d = copy();
  const path = join(d, 'train-000000.tar');
  overwriteMemberData(path, path.replace(/\.tar$/, '.idx'), 0x41);
  const loader = await Loader.open(opts(d));
  t.teardown(() => loader.close());
  let rows = 0;
  for await (const b of loader.epoch(0)) {
    rows += b.n;
    b.release();
  }
  t.equal(rows, 120, 'the batches keep their shape');
  const r = loader.replaced();
  // Every sample of the damaged shard, and replacements that happened to come from it too.
  t.ok(r.count >= 40, `${r.count} replacements`);
  t.same(new Set(r.samples.map((s) => s.key)).size >= 40, true, "each of the shard's 40 samples among them");
  t.ok(
    r.samples.every((s) => s.shard === path),
    'all named by the damaged shard',
  );
});

t.test('an index that lists no shards is an error, not an empty run', async (t) => {
  const d = copy();
  const index = JSON.parse(readFileSync(join(d, 'index.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(d, 'index.json'), JSON.stringify({ ...index, shardlist: [] }));
  await t.rejects(Loader.open(opts(d)), /index\.json: the index lists no shards/);
});

t.test('--verify passes on intact shards', async (t) => {
  const loader = await Loader.open(opts(pristine, { verify: true }));
  t.equal(loader.info.numSamples, 120);
  await loader.close();
});

t.test('one undecodable sample is replaced, named by shard and key', async (t) => {
  const d = copy();
  const path = join(d, 'train-000001.tar');
  // Sample 000000045's .npy magic: 45 is the 6th sample of shard 1; overwrite its first bytes.
  const text = readFileSync(path);
  const at = text.indexOf(Buffer.from('\x93NUMPY', 'latin1'), text.indexOf(Buffer.from('000000045.npy')));
  t.ok(at > 0, 'found the sample');
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.from('garbage!'), 0, 8, at);
  closeSync(fd);
  const loader = await Loader.open(opts(d));
  t.teardown(() => loader.close());
  for await (const b of loader.epoch(0)) b.release();
  const r = loader.replaced();
  t.equal(r.count, 1);
  t.match(r.samples[0], { shard: path, key: '000000045' });
  t.match(r.samples[0]!.reason, /npy|magic|not/i);
});

t.test('a task that cannot fill its rows fails the epoch with a LoaderError (not retried as a crash, no hang)', async (t) => {
  const d = copy();
  for (const f of ['train-000000.tar', 'train-000001.tar', 'train-000002.tar']) {
    const p = join(d, f);
    overwriteMemberData(p, p.replace(/\.tar$/, '.idx'), 0x43);
  }
  const loader = await Loader.open(opts(d));
  t.teardown(() => loader.close());
  await t.rejects(
    (async () => {
      for await (const b of loader.epoch(0)) b.release();
    })(),
    { name: 'LoaderError', message: /sample \d+: 16 replacements in a row failed; last: label is not a decimal integer/ },
  );
  t.ok(loader.replaced().count >= 16, 'every attempt counted');
});
