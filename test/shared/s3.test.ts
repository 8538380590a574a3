// The object-storage module against a real S3-compatible server on 127.0.0.1: put (single PUT and
// multipart), head, get whole and ranged, list, delete, and every failure as a typed error naming
// the URL.
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import {
  deleteObject,
  getObjectBytes,
  getObjectStream,
  headObject,
  listObjects,
  parseS3Url,
  putObject,
  S3AccessError,
  S3CredentialsError,
  S3NoSuchBucketError,
  S3NoSuchKeyError,
  S3RequestError,
  S3UrlError,
  uploadFile,
} from '../../src/shared/s3.ts';
import { startS3Server, useS3Env } from '../helpers/s3-server.ts';
import { tempDir } from '../helpers/tmp.ts';

const s3 = await startS3Server(t, ['bkt', 'other']);
useS3Env(t, s3.env);

const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

t.test('s3:// URLs: bucket and literal key', async (t) => {
  t.same(parseS3Url('s3://bkt/a/b c/d.tar'), { bucket: 'bkt', key: 'a/b c/d.tar' });
  t.same(parseS3Url('s3://bkt'), { bucket: 'bkt', key: '' });
  t.throws(() => parseS3Url('s3:///key'), S3UrlError);
  t.throws(() => parseS3Url('http://x/y'), S3UrlError);
  await t.rejects(getObjectBytes('s3://bkt/'), S3UrlError, 'a prefix is not an object');
});

t.test('a small object: one PUT, read back whole, by range, head, list, delete', async (t) => {
  const body = randomBytes(100_000);
  const before = s3.requests.length;
  await putObject('s3://bkt/small/one.bin', body);
  const sent = s3.requests.slice(before);
  t.same(
    sent.map((r) => r.method),
    ['PUT'],
    'one PUT, no multipart',
  );
  t.equal(md5(await getObjectBytes('s3://bkt/small/one.bin')), md5(body));
  const part = await getObjectBytes('s3://bkt/small/one.bin', { range: { offset: 12_345, length: 1000 } });
  t.ok(part.equals(body.subarray(12_345, 13_345)), 'ranged bytes are the slice');
  t.equal(s3.requests.at(-1)!.range, 'bytes=12345-13344', 'sent as an HTTP Range');
  const tail = await getObjectBytes('s3://bkt/small/one.bin', { range: { offset: 99_999, length: 1 } });
  t.equal(tail[0], body[99_999]);
  const h = await headObject('s3://bkt/small/one.bin');
  t.equal(h.size, 100_000);
  t.equal(h.etag, `"${md5(body)}"`, 'a single-part ETag is the md5');
  await putObject('s3://bkt/small/two.txt', 'hello');
  t.same(
    (await listObjects('s3://bkt/small/')).map((o) => [o.key, o.size, o.url]),
    [
      ['small/one.bin', 100_000, 's3://bkt/small/one.bin'],
      ['small/two.txt', 5, 's3://bkt/small/two.txt'],
    ],
  );
  await deleteObject('s3://bkt/small/two.txt');
  t.same(
    (await listObjects('s3://bkt/small/')).map((o) => o.key),
    ['small/one.bin'],
  );
  await t.rejects(
    getObjectBytes('s3://bkt/small/one.bin', { range: { offset: 99_990, length: 100 } }),
    S3RequestError,
    'a range past the end is refused, not silently short',
  );
});

t.test('a large object goes up in parts (multipart upload), from a stream and from a file', async (t) => {
  const body = randomBytes(12 * 2 ** 20 + 777);
  const before = s3.requests.length;
  const progress: number[] = [];
  await putObject('s3://bkt/big/stream.bin', Readable.from([body.subarray(0, 3_000_000), body.subarray(3_000_000)]), {
    partSize: 5 * 2 ** 20,
    onProgress: (n) => progress.push(n),
  });
  const sent = s3.requests.slice(before);
  const parts = sent.filter((r) => r.method === 'PUT' && /[?&]partNumber=/.test(r.url));
  t.equal(parts.length, 3, '12 MiB in 5 MiB parts: 3 parts');
  t.ok(
    sent.some((r) => r.method === 'POST' && /[?&]uploads/.test(r.url)),
    'multipart upload started',
  );
  t.ok(
    sent.some((r) => r.method === 'POST' && /[?&]uploadId=/.test(r.url)),
    'and completed',
  );
  t.equal(progress.at(-1), body.length, 'progress reaches the full size');
  t.equal(md5(await getObjectBytes('s3://bkt/big/stream.bin')), md5(body), 'the assembled object is the bytes sent');
  t.equal((await headObject('s3://bkt/big/stream.bin')).size, body.length);
  const file = join(tempDir(t), 'f.bin');
  writeFileSync(file, body);
  await uploadFile(file, 's3://bkt/big/file.bin', { partSize: 5 * 2 ** 20 });
  const chunks: Buffer[] = [];
  for await (const c of await getObjectStream('s3://bkt/big/file.bin')) chunks.push(Buffer.from(c));
  t.equal(md5(Buffer.concat(chunks)), md5(body), 'streamed read of the uploaded file');
});

t.test('listing pages through more than one page of keys', async (t) => {
  for (let i = 0; i < 23; i++) await putObject(`s3://other/many/k${String(i).padStart(4, '0')}`, `${i}`);
  await putObject('s3://other/else/x', 'not under the prefix');
  const before = s3.requests.length;
  const all = await listObjects('s3://other/many/', { pageSize: 5 });
  t.equal(s3.requests.length - before, 5, '23 keys in pages of 5: 5 requests');
  t.same(
    all.map((o) => o.key),
    Array.from({ length: 23 }, (_, i) => `many/k${String(i).padStart(4, '0')}`),
  );
  t.equal((await listObjects('s3://other/')).length, 24, 'the whole bucket, one page');
});

t.test('missing bucket and missing object: typed errors naming the URL', async (t) => {
  const nb = 's3://no-such-bucket/x/index.json';
  for (const [what, p] of [
    ['get', () => getObjectBytes(nb)],
    ['head', () => headObject(nb)],
    ['list', () => listObjects('s3://no-such-bucket/x/')],
    ['put', () => putObject(nb, 'x')],
  ] as const) {
    const e = await p().then(
      () => null,
      (err: unknown) => err,
    );
    t.type(e, S3NoSuchBucketError, `${what}: no such bucket`);
    t.match((e as Error).message, /bucket does not exist/);
    t.match((e as Error).message, /no-such-bucket/, `${what}: the message names the URL`);
  }
  for (const [what, p] of [
    ['get', () => getObjectBytes('s3://bkt/nope.tar')],
    ['head', () => headObject('s3://bkt/nope.tar')],
    ['ranged get', () => getObjectBytes('s3://bkt/nope.tar', { range: { offset: 0, length: 10 } })],
  ] as const) {
    const e = await p().then(
      () => null,
      (err: unknown) => err,
    );
    t.type(e, S3NoSuchKeyError, `${what}: no such object`);
    t.equal((e as S3NoSuchKeyError).url, 's3://bkt/nope.tar');
    t.match((e as Error).message, /no such object \(url "s3:\/\/bkt\/nope\.tar"\)/);
  }
});

t.test('credentials: an unknown key id is refused; none at all is its own error', async (t) => {
  await putObject('s3://bkt/cred/obj', 'x');
  t.test('wrong key', async (t) => {
    useS3Env(t, { ...s3.env, AWS_ACCESS_KEY_ID: 'WRONGKEY' });
    const e = await getObjectBytes('s3://bkt/cred/obj').catch((err: unknown) => err);
    t.type(e, S3AccessError);
    t.equal((e as S3AccessError).status, 403);
    t.equal((e as S3AccessError).code, 'InvalidAccessKeyId');
    t.match((e as Error).message, /access refused \(InvalidAccessKeyId.*AWS_ACCESS_KEY_ID.*\(url "s3:\/\/bkt\/cred\/obj"\)/s);
    await t.rejects(uploadFile(thisFile(), 's3://bkt/cred/up'), S3AccessError, 'uploads too');
  });
  t.test('no credentials anywhere', async (t) => {
    useS3Env(t, { ...s3.env, AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined });
    const e = await headObject('s3://bkt/cred/obj').catch((err: unknown) => err);
    t.type(e, S3CredentialsError);
    t.match((e as Error).message, /no AWS credentials found.*\(url "s3:\/\/bkt\/cred\/obj"\)/s);
  });
});

t.test('an unreachable endpoint is a request error naming the URL', async (t) => {
  // A port that was free a moment ago: nothing listens there.
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  useS3Env(t, { ...s3.env, AWS_ENDPOINT_URL: `http://127.0.0.1:${port}` });
  const e = await getObjectBytes('s3://bkt/cred/obj').catch((err: unknown) => err);
  t.type(e, S3RequestError);
  t.match((e as Error).message, /ECONNREFUSED.*\(url "s3:\/\/bkt\/cred\/obj"\)/s);
});

function thisFile(): string {
  return new URL(import.meta.url).pathname;
}
