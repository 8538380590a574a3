// The local shard cache with remote shards on a real S3-compatible server: download once and
// reuse, the md5 check, least-recently-used eviction under a size limit, and processes sharing
// the folder (downloads waited for, never read half-way; shards in use never evicted).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import {
  cacheLimitFromEnv,
  cacheName,
  parseByteSize,
  ShardCache,
  ShardCacheLimitError,
  ShardChecksumError,
  type ShardRef,
} from '../../../src/pipeline/loader/shard-cache.ts';
import { ShardCacheError } from '../../../src/pipeline/loader/cache-dir.ts';
import { UrlError } from '../../../src/pipeline/webdataset/errors.ts';
import { putObject, S3NoSuchKeyError } from '../../../src/shared/s3.ts';
import { childEnv, startS3Server, useS3Env } from '../../helpers/s3-server.ts';
import { tempDir } from '../../helpers/tmp.ts';

const s3 = await startS3Server(t);
useS3Env(t, s3.env);

const SIZE = 64 * 1024;
const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

/** n objects of SIZE random bytes under s3://bkt/<prefix>/, with their refs as an index gives them. */
async function upload(prefix: string, n: number): Promise<{ refs: ShardRef[]; bodies: Buffer[] }> {
  const bodies = Array.from({ length: n }, () => randomBytes(SIZE));
  const refs: ShardRef[] = [];
  for (let i = 0; i < n; i++) {
    const url = `s3://bkt/${prefix}/shard-${i}.tar`;
    await putObject(url, bodies[i]!);
    refs.push({ url, md5: md5(bodies[i]!), size: SIZE });
  }
  return { refs, bodies };
}

const key = (url: string): string => url.slice('s3://bkt/'.length);
const getsOf = (url: string): number => s3.gets('bkt', key(url)).length;
/** Cached shard entries (names without the hash prefix: the URL's basename). */
const cached = (dir: string): string[] =>
  readdirSync(dir)
    .filter((n) => !n.startsWith('.'))
    .map((n) => n.slice(17))
    .sort();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const deadPid = (): number => spawnSync(process.execPath, ['-e', '0']).pid!;

t.test('byte sizes for SMLP_SHARD_CACHE_MAX', async (t) => {
  t.equal(parseByteSize('10G'), 10 * 2 ** 30);
  t.equal(parseByteSize('500M'), 500 * 2 ** 20);
  t.equal(parseByteSize('1.5k'), 1536);
  t.equal(parseByteSize('2GiB'), 2 * 2 ** 30);
  t.equal(parseByteSize('3gb'), 3 * 2 ** 30);
  t.equal(parseByteSize('65536'), 65536);
  t.equal(parseByteSize(' 1T '), 2 ** 40);
  t.throws(() => parseByteSize('ten'), ShardCacheError);
  t.throws(() => parseByteSize('10X'), ShardCacheError);
  t.equal(cacheLimitFromEnv({}), Number.POSITIVE_INFINITY);
  t.equal(cacheLimitFromEnv({ SMLP_SHARD_CACHE_MAX: '' }), Number.POSITIVE_INFINITY);
  t.equal(cacheLimitFromEnv({ SMLP_SHARD_CACHE_MAX: '4M' }), 4 * 2 ** 20);
  t.throws(() => cacheLimitFromEnv({ SMLP_SHARD_CACHE_MAX: 'lots' }), /SMLP_SHARD_CACHE_MAX "lots" is not a byte count/);
});

t.test('downloaded once, then served from the cache; the bytes are the object', async (t) => {
  const { refs, bodies } = await upload('reuse', 2);
  const dir = tempDir(t);
  const cache = ShardCache.at(dir, Number.POSITIVE_INFINITY);
  const first = await cache.fetchAll(refs);
  t.same(
    first.map((s) => s.status),
    ['downloaded', 'downloaded'],
  );
  t.ok(readFileSync(first[0]!.path).equals(bodies[0]!));
  t.ok(readFileSync(first[1]!.path).equals(bodies[1]!));
  const second = await cache.fetchAll(refs);
  t.same(
    second.map((s) => s.status),
    ['hit', 'hit'],
  );
  t.same(
    refs.map((r) => getsOf(r.url)),
    [1, 1],
    'one GET per shard in all',
  );
  t.same(
    readdirSync(dir).filter((n) => n.startsWith('.') && n.includes('.tmp-')),
    [],
    'no temporary left',
  );
  t.equal(cache.stats.downloaded, 2);
  t.equal(cache.stats.bytes, 2 * SIZE);
  t.not(cacheName(refs[0]!.url, refs[0]!.md5), cacheName(refs[0]!.url, 'f'.repeat(32)), 'an index with another md5 is another cache entry');
});

t.test('a wrong md5: a ShardChecksumError naming the URL, nothing kept', async (t) => {
  const { refs } = await upload('badmd5', 1);
  const dir = tempDir(t);
  const bad = { ...refs[0]!, md5: '0123456789abcdef0123456789abcdef' };
  const e = await ShardCache.at(dir, Number.POSITIVE_INFINITY)
    .fetch(bad)
    .catch((err: unknown) => err);
  t.type(e, ShardChecksumError);
  t.equal((e as ShardChecksumError).url, bad.url);
  t.match(
    (e as Error).message,
    /^s3:\/\/bkt\/badmd5\/shard-0\.tar: md5 mismatch after download: the index says 0123456789abcdef0123456789abcdef, the bytes fetched hash to [0-9a-f]{32}/,
  );
  t.same(
    readdirSync(dir).filter((n) => n !== '.locks' && n !== '.inuse'),
    [],
    'neither the shard nor its temporary stays',
  );
  t.same(readdirSync(join(dir, '.locks')), [], 'the download lock is released');
});

t.test('a missing object: an error naming the URL, with the S3 error as its cause', async (t) => {
  const e = await ShardCache.at(tempDir(t), Number.POSITIVE_INFINITY)
    .fetch({ url: 's3://bkt/none/shard.tar' })
    .catch((err: unknown) => err);
  t.type(e, UrlError);
  t.type((e as Error).cause, S3NoSuchKeyError);
  t.match((e as Error).message, /no such object \(url "s3:\/\/bkt\/none\/shard\.tar"\)/);
});

t.test('over the limit, the least recently used shards nobody reads are evicted', async (t) => {
  const { refs } = await upload('lru', 5);
  const dir = tempDir(t);
  const cache = ShardCache.at(dir, 3 * SIZE + 100);
  const use = async (i: number): Promise<string> => {
    const s = await cache.fetch(refs[i]!);
    cache.release(s);
    await sleep(15); // distinct mtimes
    return s.status;
  };
  t.same([await use(0), await use(1), await use(2)], ['downloaded', 'downloaded', 'downloaded']);
  t.equal(await use(0), 'hit', 'shard 0 used again: now the most recent');
  t.equal(await use(3), 'downloaded');
  t.same(cached(dir), ['shard-0.tar', 'shard-2.tar', 'shard-3.tar'], 'shard 1, the least recently used, went');
  t.equal(await use(4), 'downloaded');
  t.same(cached(dir), ['shard-0.tar', 'shard-3.tar', 'shard-4.tar'], 'then shard 2');
  t.equal(cache.stats.evicted, 2);
  t.equal(cache.stats.evictedBytes, 2 * SIZE);
  t.equal(await use(1), 'downloaded', 'an evicted shard is fetched again');
  t.same(cached(dir), ['shard-1.tar', 'shard-3.tar', 'shard-4.tar']);
  t.equal(getsOf(refs[1]!.url), 2);
});

t.test('shards in use (here or by a live process) are never evicted; dead processes do not count', async (t) => {
  const { refs } = await upload('inuse', 6);
  const dir = tempDir(t);
  const cache = ShardCache.at(dir, 3 * SIZE + 100);
  const held = await cache.fetch(refs[0]!); // oldest, but this process reads it
  await sleep(15);
  for (const i of [1, 2]) {
    cache.release(await cache.fetch(refs[i]!));
    await sleep(15);
  }
  // Another live process reads shard 1; a dead one "read" shard 2.
  const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  t.teardown(() => void sleeper.kill());
  const dead = deadPid();
  writeFileSync(join(dir, '.inuse', `${cacheName(refs[1]!.url, refs[1]!.md5)}.${sleeper.pid}`), `${hostname()}\n`);
  const staleMark = join(dir, '.inuse', `${cacheName(refs[2]!.url, refs[2]!.md5)}.${dead}`);
  writeFileSync(staleMark, `${hostname()}\n`);
  cache.release(await cache.fetch(refs[3]!));
  t.same(cached(dir), ['shard-0.tar', 'shard-1.tar', 'shard-3.tar'], 'shard 2 went: its only reader is dead');
  t.notOk(existsSync(staleMark), 'the dead process mark was removed');
  await sleep(15);
  const four = await cache.fetch(refs[4]!);
  t.same(cached(dir), ['shard-0.tar', 'shard-1.tar', 'shard-4.tar'], 'then shard 3, the only one free');
  t.notOk(cache.stats.overLimit);
  // Everything left is in use: the new shard still comes, the cache goes over and says so.
  await sleep(15);
  const five = await cache.fetch(refs[5]!);
  t.equal(five.status, 'downloaded');
  t.same(cached(dir), ['shard-0.tar', 'shard-1.tar', 'shard-4.tar', 'shard-5.tar'], 'nothing could go');
  t.ok(cache.stats.overLimit, 'over the limit, reported');
  for (const s of [held, four, five]) cache.release(s);
  sleeper.kill();
  await once(sleeper, 'exit');
  await sleep(15);
  cache.release(await cache.fetch(refs[2]!));
  t.same(cached(dir), ['shard-2.tar', 'shard-4.tar', 'shard-5.tar'], 'readers gone: back under the limit, oldest (0, then 1) first');
});

t.test('a dataset larger than the limit is refused up front, naming the limit', async (t) => {
  const refs = [0, 1, 2].map((i) => ({ url: `s3://bkt/toolarge/s${i}.tar`, size: 1000 }));
  const e = await ShardCache.at(tempDir(t), 2500)
    .fetchAll(refs, { source: 's3://bkt/toolarge/index.json' })
    .catch((err: unknown) => err);
  t.type(e, ShardCacheLimitError);
  t.match(
    (e as Error).message,
    /^s3:\/\/bkt\/toolarge\/index\.json: the dataset's 3 remote shards take 3000 bytes, more than SMLP_SHARD_CACHE_MAX \(2500 bytes\)/,
  );
  t.equal(s3.requests.filter((r) => r.url.startsWith('/bkt/toolarge/')).length, 0, 'nothing was downloaded');
});

t.test('a shard another process is downloading is waited for, not read half-way nor fetched again', async (t) => {
  const { refs, bodies } = await upload('wait', 2);
  const dir = tempDir(t);
  const cache = ShardCache.at(dir, Number.POSITIVE_INFINITY);
  mkdirSync(join(dir, '.locks'), { recursive: true });
  mkdirSync(join(dir, '.inuse'), { recursive: true });
  const name = cacheName(refs[0]!.url, refs[0]!.md5);
  const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  t.teardown(() => void sleeper.kill());
  // The other process: holds the download lock, has half the bytes in its temporary.
  const lockFile = join(dir, '.locks', name);
  writeFileSync(lockFile, JSON.stringify({ pid: sleeper.pid, host: hostname(), token: 'other' }));
  const tmp = join(dir, `.${name}.tmp-${sleeper.pid}-abcdef`);
  writeFileSync(tmp, bodies[0]!.subarray(0, SIZE / 2));
  let settled = false;
  const p = cache.fetch(refs[0]!).finally(() => {
    settled = true;
  });
  await sleep(400);
  t.notOk(settled, 'still waiting');
  t.equal(getsOf(refs[0]!.url), 0, 'no second download');
  t.ok(existsSync(tmp), 'the other process temporary is left alone');
  // It finishes: rename into place, then let go of the lock.
  writeFileSync(tmp, bodies[0]!);
  renameSync(tmp, join(dir, name));
  rmSync(lockFile);
  const got = await p;
  t.equal(got.status, 'waited');
  t.ok(readFileSync(got.path).equals(bodies[0]!));
  t.equal(getsOf(refs[0]!.url), 0);
  // A lock left by a dead process (and its temporary) does not block anyone.
  const dead = deadPid();
  const name1 = cacheName(refs[1]!.url, refs[1]!.md5);
  writeFileSync(join(dir, '.locks', name1), JSON.stringify({ pid: dead, host: hostname(), token: 'dead' }));
  const orphan = join(dir, `.${name1}.tmp-${dead}-zzzzzz`);
  writeFileSync(orphan, 'partial');
  utimesSync(orphan, new Date(Date.now() - 5000), new Date(Date.now() - 5000));
  const taken = await cache.fetch(refs[1]!);
  t.equal(taken.status, 'downloaded', 'the stale lock was taken over');
  t.ok(readFileSync(taken.path).equals(bodies[1]!));
  cache.dir.scan();
  t.notOk(existsSync(orphan), "a dead process's temporary is removed by the next scan");
  t.notOk(existsSync(join(dir, '.locks', name1)), 'and the lock released');
});

function runChild(args: string[]): ChildProcess & { lines: AsyncIterator<string>; exited: Promise<number | null> } {
  const p = spawn(process.execPath, ['--import', 'tsx', new URL('../../helpers/cache-child.ts', import.meta.url).pathname, ...args], {
    env: childEnv(s3.env),
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  // Listening from the start: a child may be gone before the test looks.
  const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  const queue: string[] = [];
  const waiters: ((s: string) => void)[] = [];
  let buf = '';
  p.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiters.shift();
      if (w) w(line);
      else queue.push(line);
    }
  });
  const lines: AsyncIterator<string> = {
    next: () =>
      queue.length ? Promise.resolve({ value: queue.shift()!, done: false }) : new Promise((r) => waiters.push((v) => r({ value: v, done: false }))),
  };
  return Object.assign(p, { lines, exited });
}

t.test('two processes fetching the same shards at once: each shard downloaded once, both get whole files', async (t) => {
  const { refs } = await upload('two', 6);
  const dir = tempDir(t);
  const a = runChild(['fetch', dir, 'inf', JSON.stringify(refs)]);
  const b = runChild(['fetch', dir, 'inf', JSON.stringify(refs)]);
  const [la, lb] = await Promise.all([a.lines.next(), b.lines.next()]);
  const sa = (JSON.parse(la.value) as { statuses: string[] }).statuses;
  const sb = (JSON.parse(lb.value) as { statuses: string[] }).statuses;
  t.same(await Promise.all([a.exited, b.exited]), [0, 0]);
  t.same(
    refs.map((r) => getsOf(r.url)),
    [1, 1, 1, 1, 1, 1],
    'one GET per shard across both processes',
  );
  for (let i = 0; i < refs.length; i++) {
    t.same([sa[i], sb[i]].filter((s) => s === 'downloaded').length, 1, `shard ${i}: one downloader (${sa[i]}, ${sb[i]})`);
    const path = join(dir, cacheName(refs[i]!.url, refs[i]!.md5));
    t.equal(md5(readFileSync(path)), refs[i]!.md5, `shard ${i} whole`);
  }
  t.same(readdirSync(join(dir, '.inuse')), [], 'their in-use marks went with them');
});

t.test('eviction by one process never removes what another process reads', async (t) => {
  const { refs } = await upload('share', 4);
  const dir = tempDir(t);
  const holder = runChild(['hold', dir, 'inf', JSON.stringify(refs.slice(0, 2))]);
  const ready = JSON.parse((await holder.lines.next()).value) as { ready: string[]; pid: number };
  t.same(ready.ready, ['downloaded', 'downloaded']);
  const marks = readdirSync(join(dir, '.inuse')).sort();
  t.equal(marks.length, 2);
  t.ok(
    marks.every((m) => m.endsWith(`.${ready.pid}`)),
    'marked in use by the holder',
  );
  // This process, with room for two shards, brings two more: the holder's must stay.
  const cache = ShardCache.at(dir, 2 * SIZE + 100);
  await sleep(15);
  cache.release(await cache.fetch(refs[2]!));
  await sleep(15);
  cache.release(await cache.fetch(refs[3]!));
  t.same(cached(dir), ['shard-0.tar', 'shard-1.tar', 'shard-3.tar'], 'shard 2 (free, oldest but for the held ones) went; 0 and 1 stayed');
  holder.stdin!.write('check\n');
  const verdict = JSON.parse((await holder.lines.next()).value) as { intact: boolean[] };
  t.same(verdict.intact, [true, true], 'the holder still reads both, whole');
  t.equal(await holder.exited, 0);
  t.same(readdirSync(join(dir, '.inuse')), [], 'its marks went on exit');
  cache.release(await cache.fetch(refs[2]!));
  t.same(cached(dir), ['shard-2.tar', 'shard-3.tar'], 'once it exited, its shards were evictable (least recently used first)');
});
