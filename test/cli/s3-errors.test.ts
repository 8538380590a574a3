// S3 failures through the loader command, each a clear error naming the URL (wrong md5, missing
// bucket, object or shard, wrong credentials, a dataset over the cache limit), and a cache limit
// below two datasets evicting part of the first.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { cacheName } from '../../src/pipeline/loader/shard-cache.ts';
import { putObject } from '../../src/shared/s3.ts';
import { dumpArgs, s3Dataset } from './s3-fixture.ts';

const { root, TRAIN, VAL, TARS, loaderCli } = await s3Dataset(t);

t.test('failures are clear errors naming the URL', async (t) => {
  const out = join(root, 'x.bin');
  const cache = join(root, 'cache-errors');
  const run = async (data: string, env: Record<string, string | undefined> = {}): Promise<string> => {
    const r = await loaderCli(dumpArgs(data, out), { SMLP_SHARD_CACHE: cache, ...env });
    t.equal(r.code, 1, `fails: ${data}`);
    return r.stderr;
  };
  // An index whose first shard's md5 is wrong (the shard itself is fine).
  const index = JSON.parse(readFileSync(TRAIN, 'utf8')) as { shardlist: { url: string; md5sum: string }[] };
  index.shardlist[0]!.md5sum = '0'.repeat(32);
  await putObject('s3://bkt/ds/train/bad-md5.json', JSON.stringify(index));
  t.match(
    await run('s3://bkt/ds/train/bad-md5.json'),
    /loader: ShardChecksumError: s3:\/\/bkt\/ds\/train\/train-000000\.tar: md5 mismatch after download: the index says 0{32}/,
  );
  t.match(
    await run('s3://no-such-bucket/ds/index.json'),
    /UrlError: cannot fetch wids index: cannot read object: the bucket does not exist \(url "s3:\/\/no-such-bucket\/ds\/index\.json"\)/,
  );
  t.match(
    await run('s3://bkt/nothing/index.json'),
    /UrlError: cannot fetch wids index: cannot read object: no such object \(url "s3:\/\/bkt\/nothing\/index\.json"\)/,
  );
  // The index is there, its shards are not.
  await putObject('s3://bkt/partial/index.json', readFileSync(TRAIN));
  t.match(await run('s3://bkt/partial/index.json'), /UrlError: cannot read object: no such object \(url "s3:\/\/bkt\/partial\/train-00000\d\.tar"\)/);
  t.match(
    await run('s3://bkt/ds/train/index.json', { AWS_ACCESS_KEY_ID: 'WRONGKEY' }),
    /access refused \(InvalidAccessKeyId.*\(url "s3:\/\/bkt\/ds\/train\/index\.json"\)/,
  );
  t.match(
    await run('s3://bkt/ds/train/index.json', { SMLP_SHARD_CACHE_MAX: '10K' }),
    /ShardCacheLimitError: s3:\/\/bkt\/ds\/train\/index\.json: the dataset's \d+ remote shards take \d+ bytes, more than SMLP_SHARD_CACHE_MAX \(10240 bytes\)/,
  );
  t.match(await run('s3://bkt/ds/train/index.json', { SMLP_SHARD_CACHE_MAX: 'lots' }), /SMLP_SHARD_CACHE_MAX "lots" is not a byte count/);
});

t.test(
  'a cache limit below two datasets: the second run evicts part of the first to stay under it (the LRU order is checked in shard-cache.test.ts)',
  async (t) => {
    const cache = join(root, 'cache-evict');
    const sizes = (dir: string): number => TARS.reduce((s, n) => s + statSync(join(dir, n)).size, 0);
    const limit = sizes(join(root, 'train')) + 1024; // the training set, and then some
    const env = { SMLP_SHARD_CACHE: cache, SMLP_SHARD_CACHE_MAX: String(limit) };
    const a = await loaderCli(dumpArgs('s3://bkt/ds/train/index.json', join(root, 'e1.bin')), env);
    t.equal(a.code, 0, a.stderr);
    const b = await loaderCli(dumpArgs('s3://bkt/ds/val/index.json', join(root, 'e2.bin')), env);
    t.equal(b.code, 0, b.stderr);
    t.match(b.stderr, /remote shards: \d+ downloaded .*, 0 from the cache, \d+ evicted \([\d.]+ MB\)/);
    const held = readdirSync(cache)
      .filter((n) => !n.startsWith('.'))
      .map((n) => statSync(join(cache, n)).size)
      .reduce((s, x) => s + x, 0);
    t.ok(held <= limit, `the cache holds ${held} bytes, under its limit ${limit}`);
    const entries = (index: string, prefix: string): string[] =>
      (JSON.parse(readFileSync(index, 'utf8')) as { shardlist: { url: string; md5sum: string }[] }).shardlist.map((e) =>
        cacheName(`${prefix}/${e.url}`, e.md5sum),
      );
    const present = new Set(readdirSync(cache));
    const val = entries(VAL, 's3://bkt/ds/val');
    const train = entries(TRAIN, 's3://bkt/ds/train');
    t.ok(
      val.every((n) => present.has(n)),
      'all of the second dataset is there',
    );
    const kept = train.filter((n) => present.has(n)).length;
    t.ok(kept < train.length && kept > 0, `part of the first dataset was evicted (${kept} of ${train.length} kept)`);
  },
);
