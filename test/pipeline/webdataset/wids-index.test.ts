import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { readWidsIndex, resolveShardUrl, writeWidsIndex, type WidsIndex } from '../../../src/pipeline/webdataset/wids-index.ts';

const dir = mkdtempSync(join(tmpdir(), 'wds-wids-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const index = (extra: Partial<WidsIndex> = {}): WidsIndex => ({
  __kind__: 'wids-shard-index-v1',
  wids_version: 1,
  name: 'imagenet-64',
  shardlist: [
    { url: 'train-000000.tar', nsamples: 1000, filesize: 10240000, md5sum: '0123456789abcdef0123456789abcdef' },
    { url: 'train-000001.tar', nsamples: 17 },
  ],
  ...extra,
});

t.test('write then read: pretty JSON, atomic, extra fields kept', async (t) => {
  const sub = join(dir, 'rt');
  mkdirSync(sub);
  const path = join(sub, 'train.json');
  await writeWidsIndex(path, index({ image_size: 64, mean: [0.5, 0.5, 0.5] }));
  t.strictSame(readdirSync(sub), ['train.json'], 'no temp file left behind');
  const text = readFileSync(path, 'utf8');
  t.match(text, /^\{\n {2}"__kind__": "wids-shard-index-v1",\n {2}"wids_version": 1,/);
  t.ok(text.endsWith('}\n'));
  const back = await readWidsIndex(path);
  t.equal(back.name, 'imagenet-64');
  t.equal(back['image_size'], 64, 'our own extra fields survive at top level');
  t.strictSame(back.shardlist, index().shardlist);
  t.strictSame(back.resolvedUrls, [join(sub, 'train-000000.tar'), join(sub, 'train-000001.tar')], 'relative to the index folder');
  const viaUrl = await readWidsIndex(pathToFileURL(path).href);
  t.strictSame(viaUrl.resolvedUrls, back.resolvedUrls, 'file:// index');
});

t.test('validation names the file and the bad field, on read and on write', async (t) => {
  const cases: [unknown, RegExp][] = [
    [[], /document is not a JSON object/],
    [{ ...index(), __kind__: 'wids-v2' }, /__kind__ must be "wids-shard-index-v1"/],
    [{ ...index(), wids_version: 2 }, /wids_version must be 1/],
    [{ ...index(), shardlist: {} }, /shardlist must be an array/],
    [{ ...index(), shardlist: [{ nsamples: 3 }] }, /shardlist\[0\]\.url must be a non-empty string/],
    [
      {
        ...index(),
        shardlist: [
          { url: 'a.tar', nsamples: 1 },
          { url: 'b.tar', nsamples: -1 },
        ],
      },
      /shardlist\[1\]\.nsamples must be a non-negative integer/,
    ],
    [{ ...index(), shardlist: [{ url: 'a.tar', nsamples: '7' }] }, /shardlist\[0\]\.nsamples/],
    [{ ...index(), shardlist: [{ url: 'a.tar', nsamples: 1, filesize: 1.5 }] }, /shardlist\[0\]\.filesize/],
    [{ ...index(), shardlist: [{ url: 'a.tar', nsamples: 1, md5sum: 'xyz' }] }, /shardlist\[0\]\.md5sum/],
    [{ ...index(), base: 7 }, /base must be a string/],
  ];
  for (const [i, [doc, message]] of cases.entries()) {
    const path = join(dir, `bad-${i}.json`);
    writeFileSync(path, JSON.stringify(doc));
    await t.rejects(readWidsIndex(path), { name: 'WebDatasetError', url: path, message }, String(message));
    await t.rejects(writeWidsIndex(join(dir, `w-${i}.json`), doc as WidsIndex), { name: 'WebDatasetError', message });
    t.notOk(existsSync(join(dir, `w-${i}.json`)), 'an invalid index is never written');
  }
  writeFileSync(join(dir, 'notjson.json'), '{"__kind__": ');
  await t.rejects(readWidsIndex(join(dir, 'notjson.json')), { name: 'WebDatasetError', message: /not valid JSON.*notjson\.json/ });
  await t.rejects(readWidsIndex(join(dir, 'missing.json')), { name: 'UrlError', message: /no such file/, url: join(dir, 'missing.json') });
});

t.test('relative URLs resolve against base, else the index folder', async (t) => {
  const sub = join(dir, 'res', 'idx');
  mkdirSync(sub, { recursive: true });
  const write = async (name: string, extra: Partial<WidsIndex>): Promise<string[]> => {
    const path = join(sub, name);
    await writeWidsIndex(path, index(extra));
    return (await readWidsIndex(path)).resolvedUrls;
  };
  t.strictSame(
    await write('a.json', { base: '../shards' }),
    [join(dir, 'res', 'shards', 'train-000000.tar'), join(dir, 'res', 'shards', 'train-000001.tar')],
    'relative base',
  );
  t.strictSame(await write('b.json', { base: '/data/x' }), ['/data/x/train-000000.tar', '/data/x/train-000001.tar'], 'absolute base');
  t.strictSame(
    await write('c.json', { base: 'https://cdn.example.com/ds/v1' }),
    ['https://cdn.example.com/ds/v1/train-000000.tar', 'https://cdn.example.com/ds/v1/train-000001.tar'],
    'URL base is a directory with or without a trailing slash, as in wids urlmerge',
  );
  t.strictSame(
    await write('d.json', {
      shardlist: [
        { url: '/abs/s.tar', nsamples: 1 },
        { url: 'http://h/s.tar', nsamples: 1 },
        { url: 'sub/../s.tar', nsamples: 1 },
      ],
    }),
    ['/abs/s.tar', 'http://h/s.tar', join(sub, 's.tar')],
    'absolute paths and URLs are kept',
  );
  t.equal(resolveShardUrl('a/../b.tar?x=1#f', 'http://h/base/'), 'http://h/base/b.tar?x=1#f');
  t.equal(resolveShardUrl('/root.tar', 'http://h/base'), 'http://h/root.tar', 'absolute path keeps scheme and host');
});

t.test('an index served over http resolves against its URL', async (t) => {
  const body = JSON.stringify(index());
  const server = createServer((req, res) => {
    if (req.url === '/ds/train.json') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    } else {
      res.writeHead(404, 'Not Found');
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const r = await readWidsIndex(`${base}/ds/train.json`);
  t.strictSame(r.resolvedUrls, [`${base}/ds/train-000000.tar`, `${base}/ds/train-000001.tar`]);
  await t.rejects(readWidsIndex(`${base}/nope.json`), { name: 'UrlError', message: /HTTP 404/, url: `${base}/nope.json` });
});
