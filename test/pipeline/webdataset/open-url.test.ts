import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import t from 'tap';
import { encodeCls } from '../../../src/pipeline/webdataset/codecs.ts';
import { openUrl, readShard, webdataset, type WdsSample } from '../../../src/pipeline/webdataset/open-url.ts';
import { TarWriter } from '../../../src/pipeline/webdataset/tar-writer.ts';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

const dir = mkdtempSync(join(tmpdir(), 'wds-open-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const payload = (i: number, n: number): Buffer => Buffer.from(Uint8Array.from({ length: n }, (_, j) => (i * 13 + j) & 0xff));

async function makeShard(name: string, first: number, count: number): Promise<Buffer> {
  const w = new TarWriter(join(dir, name));
  for (let i = first; i < first + count; i++) {
    await w.write({ key: `k${String(i).padStart(4, '0')}`, members: { cls: encodeCls(i % 10), bin: payload(i, 3000 + i) } });
  }
  await w.close();
  return readFileSync(join(dir, name));
}

async function keys(it: AsyncIterable<WdsSample>): Promise<string[]> {
  const out: string[] = [];
  for await (const s of it) {
    const i = Number(s.__key__.slice(1));
    if (!Buffer.isBuffer(s['bin']) || !s['bin'].equals(payload(i, 3000 + i))) throw new Error(`payload of ${s.__key__} differs`);
    out.push(s.__key__);
  }
  return out;
}

const shard0 = await makeShard('shard-0.tar', 0, 5);
const shard1 = await makeShard('shard-1.tar', 5, 3);
writeFileSync(join(dir, 'shard-1.tar.gz'), gzipSync(shard1));
writeFileSync(join(dir, 'misnamed.tar'), gzipSync(shard0));

t.test('local paths and file:// URLs', async (t) => {
  t.strictSame(await keys(readShard(join(dir, 'shard-0.tar'))), ['k0000', 'k0001', 'k0002', 'k0003', 'k0004']);
  t.strictSame(await keys(readShard(pathToFileURL(join(dir, 'shard-1.tar')).href)), ['k0005', 'k0006', 'k0007']);
  const [first] = await (async () => {
    const out: WdsSample[] = [];
    for await (const s of readShard(join(dir, 'shard-0.tar'))) out.push(s);
    return out;
  })();
  t.equal(first!.__url__, join(dir, 'shard-0.tar'), '__url__ is the URL as given');
});

t.test('gzip is detected by magic bytes, whatever the name', async (t) => {
  t.strictSame(await keys(readShard(join(dir, 'shard-1.tar.gz'))), ['k0005', 'k0006', 'k0007']);
  t.strictSame(await keys(readShard(join(dir, 'misnamed.tar'))), ['k0000', 'k0001', 'k0002', 'k0003', 'k0004']);
  let raw = 0;
  for await (const c of await openUrl(join(dir, 'shard-1.tar.gz'))) raw += c.length;
  t.equal(raw, shard1.length, 'openUrl yields the decompressed bytes');
  const expected = JSON.parse(readFileSync(join(FIXTURES, 'python-mixed.expected.json'), 'utf8')) as Record<string, { __key__: string }[]>;
  const got: string[] = [];
  for await (const s of readShard(join(FIXTURES, 'python-mixed-gnu.tar.gz'))) got.push(s.__key__);
  t.strictSame(
    got,
    expected['python-mixed-gnu.tar.gz']!.map((s) => s.__key__),
    'Python-written GNU tar, gzipped',
  );
  const broken = gzipSync(shard0).subarray(0, 300); // cut mid-stream: zlib reports it
  writeFileSync(join(dir, 'broken.tar.gz'), broken);
  await t.rejects(keys(readShard(join(dir, 'broken.tar.gz'))), { name: 'UrlError', url: join(dir, 'broken.tar.gz'), message: /gzip/ });
});

t.test('missing files and unknown schemes are UrlErrors naming the URL', async (t) => {
  const missing = join(dir, 'nope-000.tar');
  await t.rejects(openUrl(missing), { name: 'UrlError', url: missing, message: /no such file.*nope-000\.tar/ });
  await t.rejects(keys(readShard(missing)), { name: 'UrlError', url: missing });
  await t.rejects(openUrl('gs://bucket/x.tar'), { name: 'UrlError', message: /unsupported URL scheme "gs"/ });
  await t.rejects(openUrl(dir), { name: 'UrlError', url: dir }, 'a directory is not a shard');
});

t.test('a truncated local shard fails naming the file and offset', async (t) => {
  const cut = join(dir, 'cut.tar');
  writeFileSync(cut, shard0.subarray(0, 512 * 3 + 100));
  await t.rejects(keys(readShard(cut)), {
    name: 'TarFormatError',
    url: cut,
    member: 'k0000.bin',
    offset: 512,
    message: /data ends after 1124 of 3000 bytes.*cut\.tar.*offset 512/,
  });
});

t.test('http(s): streamed, gzip, errors', async (t) => {
  let releaseRest: () => void = () => undefined;
  const restReleased = new Promise<void>((r) => (releaseRest = r));
  let slowFinished = false;
  const server: Server = createServer((req, res) => {
    const send = (body: Buffer): void => {
      res.writeHead(200, { 'content-type': 'application/x-tar' });
      res.end(body);
    };
    if (req.url === '/shard-0.tar') send(shard0);
    else if (req.url === '/shard-1.tar') send(shard1);
    else if (req.url === '/shard-1.tar.gz') send(gzipSync(shard1));
    else if (req.url === '/slow.tar') {
      // Hold the rest back until the client has seen the first sample: a reader that buffered
      // the whole response would wait forever. 9000 bytes cover sample k0000 and the first
      // member of k0001 (grouping needs to see the next key before it yields a sample).
      res.writeHead(200);
      res.write(shard0.subarray(0, 9000));
      void restReleased.then(() => {
        slowFinished = true;
        res.end(shard0.subarray(9000));
      });
    } else if (req.url === '/hang.tar') {
      res.writeHead(200);
      res.write(shard0.subarray(0, 1000));
    } else {
      res.writeHead(404, 'Not Found');
      res.end('missing');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  t.strictSame(await keys(readShard(`${base}/shard-0.tar`)), ['k0000', 'k0001', 'k0002', 'k0003', 'k0004']);
  t.strictSame(await keys(readShard(`${base}/shard-1.tar.gz`)), ['k0005', 'k0006', 'k0007'], 'gzip over http');

  const seen: string[] = [];
  for await (const s of readShard(`${base}/slow.tar`)) {
    seen.push(s.__key__);
    if (seen.length === 1) {
      t.notOk(slowFinished, 'first sample arrived before the server sent the rest');
      releaseRest();
    }
  }
  t.equal(seen.length, 5);

  t.strictSame(
    await keys(webdataset(`${base}/shard-{0..1}.tar::${join(dir, 'shard-1.tar.gz')}`)),
    ['k0000', 'k0001', 'k0002', 'k0003', 'k0004', 'k0005', 'k0006', 'k0007', 'k0005', 'k0006', 'k0007'],
    'all shards in order, http and local mixed',
  );

  await t.rejects(openUrl(`${base}/missing.tar`), { name: 'UrlError', url: `${base}/missing.tar`, message: /HTTP 404 Not Found/ });
  await t.rejects(keys(webdataset(`${base}/shard-{0..2}.tar`)), { name: 'UrlError', url: `${base}/shard-2.tar` });

  const ac = new AbortController();
  const hanging = (async () => {
    for await (const c of await openUrl(`${base}/hang.tar`, { signal: ac.signal })) void c;
  })();
  setTimeout(() => ac.abort(), 50);
  await t.rejects(hanging, { name: 'UrlError', url: `${base}/hang.tar` }, 'abort mid-stream');

  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const deadPort = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  await t.rejects(openUrl(`http://127.0.0.1:${deadPort}/x.tar`), { name: 'UrlError', message: /request failed.*ECONNREFUSED/ });
});
