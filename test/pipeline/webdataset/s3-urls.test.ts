// s3:// in the WebDataset module: shard URLs resolved against an s3:// index (keys joined as text,
// never percent-encoded), indexes read from a bucket, shards opened (gzip included), and errors.
import { gzipSync } from 'node:zlib';
import t from 'tap';
import { UrlError } from '../../../src/pipeline/webdataset/errors.ts';
import { openUrl } from '../../../src/pipeline/webdataset/open-url.ts';
import { readWidsIndex, resolveShardUrl } from '../../../src/pipeline/webdataset/wids-index.ts';
import { putObject, S3NoSuchBucketError, S3NoSuchKeyError } from '../../../src/shared/s3.ts';
import { startS3Server, useS3Env } from '../../helpers/s3-server.ts';

t.test('shard URLs relative to an s3:// location', async (t) => {
  t.equal(resolveShardUrl('train-000000.tar', 's3://bkt/a/b'), 's3://bkt/a/b/train-000000.tar');
  t.equal(resolveShardUrl('x/../y.tar', 's3://bkt/a/'), 's3://bkt/a/y.tar');
  t.equal(resolveShardUrl('/top.tar', 's3://bkt/a/b'), 's3://bkt/top.tar', 'a leading slash: from the bucket root');
  t.equal(resolveShardUrl('../../../up.tar', 's3://bkt/a'), 's3://bkt/up.tar', 'never above the bucket');
  t.equal(resolveShardUrl('with space%20.tar', 's3://bkt/p q'), 's3://bkt/p q/with space%20.tar', 'keys are literal text');
  t.equal(resolveShardUrl('s3://other/x.tar', 's3://bkt/a'), 's3://other/x.tar', 'a full URL is kept');
  t.equal(resolveShardUrl('train.tar', 's3://bkt'), 's3://bkt/train.tar');
});

const s3 = await startS3Server(t);
useS3Env(t, s3.env);

const INDEX = {
  __kind__: 'wids-shard-index-v1',
  wids_version: 1,
  shardlist: [
    { url: 'train-000000.tar', nsamples: 1 },
    { url: 'sub dir/b.tar', nsamples: 2 },
  ],
};

t.test('an index in a bucket: read, its shards resolved against its folder (or its base)', async (t) => {
  await putObject('s3://bkt/ds/v1/index.json', JSON.stringify(INDEX));
  const idx = await readWidsIndex('s3://bkt/ds/v1/index.json');
  t.same(idx.resolvedUrls, ['s3://bkt/ds/v1/train-000000.tar', 's3://bkt/ds/v1/sub dir/b.tar']);
  await putObject('s3://bkt/ds/v2/index.json', JSON.stringify({ ...INDEX, base: '../v1' }));
  t.same(
    (await readWidsIndex('s3://bkt/ds/v2/index.json')).resolvedUrls,
    ['s3://bkt/ds/v1/train-000000.tar', 's3://bkt/ds/v1/sub dir/b.tar'],
    'a relative base',
  );
  const missing = await readWidsIndex('s3://bkt/ds/none/index.json').catch((e: unknown) => e);
  t.type(missing, UrlError);
  t.type((missing as Error).cause, S3NoSuchKeyError);
  t.match((missing as Error).message, /^cannot fetch wids index: cannot read object: no such object \(url "s3:\/\/bkt\/ds\/none\/index\.json"\)$/);
  const noBucket = await readWidsIndex('s3://nobucket/index.json').catch((e: unknown) => e);
  t.type((noBucket as Error).cause, S3NoSuchBucketError);
  await putObject('s3://bkt/ds/bad/index.json', '{"not": "an index"');
  await t.rejects(readWidsIndex('s3://bkt/ds/bad/index.json'), /wids index is not valid JSON.*s3:\/\/bkt\/ds\/bad\/index\.json/);
});

t.test('openUrl streams an s3:// object, gunzipping a .tar.gz', async (t) => {
  const body = Buffer.from(`${'x'.repeat(5000)}end`);
  await putObject('s3://bkt/o/plain.tar', body);
  await putObject('s3://bkt/o/packed.tar.gz', gzipSync(body));
  for (const url of ['s3://bkt/o/plain.tar', 's3://bkt/o/packed.tar.gz']) {
    const chunks: Buffer[] = [];
    for await (const c of await openUrl(url)) chunks.push(Buffer.from(c));
    t.ok(Buffer.concat(chunks).equals(body), url);
  }
  const e = await openUrl('s3://bkt/o/none.tar').catch((err: unknown) => err);
  t.type(e, UrlError);
  t.equal((e as UrlError).url, 's3://bkt/o/none.tar');
  t.type((e as Error).cause, S3NoSuchKeyError);
});
