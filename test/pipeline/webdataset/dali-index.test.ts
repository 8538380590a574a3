import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { encodeCls } from '../../../src/pipeline/webdataset/codecs.ts';
import { encodeDaliIndex, parseDaliIndex } from '../../../src/pipeline/webdataset/dali-index.ts';
import { decodeHeader } from '../../../src/pipeline/webdataset/tar-header.ts';
import { TarWriter, encodeSample, type MemberLocation } from '../../../src/pipeline/webdataset/tar-writer.ts';

const dir = mkdtempSync(join(tmpdir(), 'wds-dali-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const blob = (i: number, n: number): Uint8Array => Uint8Array.from({ length: n }, (_, j) => (i * 7 + j) & 0xff);

t.test('index of a written shard points at each member data, absolutely', async (t) => {
  const path = join(dir, 'shard.tar');
  const w = new TarWriter(path);
  const samples: { members: MemberLocation[] }[] = [];
  for (let i = 0; i < 6; i++) {
    samples.push({ members: await w.write({ key: `img/${i}`, members: { cls: encodeCls(i), jpg: blob(i, 500 + 200 * i), 'seg.png': blob(i, 3) } }) });
  }
  await w.close();
  const text = encodeDaliIndex(samples);
  const lines = text.split('\n');
  t.equal(lines[0], 'v1.2 6');
  t.equal(lines[1], 'cls 512 1 img/0.cls jpg 1536 500 img/0.jpg seg.png 2560 3 img/0.seg.png');
  t.equal(lines.length, 8, 'one line per sample, newline-terminated');
  t.equal(lines[7], '');

  const file = readFileSync(path);
  const parsed = parseDaliIndex(text);
  t.equal(parsed.length, 6);
  for (const [i, sample] of parsed.entries()) {
    for (const c of sample) {
      t.equal(c.offset % 512, 0);
      t.equal(decodeHeader(file, c.offset - 512)?.name, c.name, `${c.name}: header right before the data`);
      const want = c.ext === 'cls' ? Buffer.from(String(i)) : Buffer.from(c.ext === 'jpg' ? blob(i, 500 + 200 * i) : blob(i, 3));
      t.strictSame(file.subarray(c.offset, c.offset + c.size), want, `${c.name} bytes`);
    }
  }
});

t.test('fileOffsets shifts relative encodeSample locations', async (t) => {
  const a = encodeSample({ key: 'a', members: { cls: encodeCls(1) } });
  const b = encodeSample({ key: 'b', members: { cls: encodeCls(2), txt: blob(1, 600) } });
  t.equal(encodeDaliIndex([a, b], [0, a.bytes.length]), `v1.2 2\ncls 512 1 a.cls\ncls ${1024 + 512} 1 b.cls txt ${1024 + 1536} 600 b.txt\n`);
  t.equal(encodeDaliIndex([a], 10240), 'v1.2 1\ncls 10752 1 a.cls\n');
  t.throws(() => encodeDaliIndex([a, b], [0]), { name: 'WebDatasetError', message: /2 samples/ });
  t.throws(() => encodeDaliIndex([]), { name: 'WebDatasetError' });
  t.throws(() => encodeDaliIndex([{ members: [] }]), { name: 'WebDatasetError' });
  t.throws(() => encodeDaliIndex([a], 100), { name: 'WebDatasetError', message: /multiple of 512/ });
  t.throws(() => encodeDaliIndex([{ members: [{ ext: 'cls', name: 'a b.cls', headerOffset: 0, dataOffset: 512, size: 1 }] }]), {
    name: 'WebDatasetError',
    message: /whitespace/,
  });
});

t.test('parseDaliIndex reads v1.1 and rejects malformed files with a line number', async (t) => {
  t.strictSame(parseDaliIndex('v1.1 2\njpg 512 10 cls 1536 1\njpg 2560 20\n'), [
    [
      { ext: 'jpg', offset: 512, size: 10, name: '' },
      { ext: 'cls', offset: 1536, size: 1, name: '' },
    ],
    [{ ext: 'jpg', offset: 2560, size: 20, name: '' }],
  ]);
  const bad: [string, RegExp][] = [
    ['v2.0 1\njpg 512 1 a.jpg\n', /line 1: unsupported version/],
    ['v1.2 0\n', /line 1: bad sample count/],
    ['v1.2 2\njpg 512 1 a.jpg', /line 3: missing/],
    ['v1.2 2\njpg 512 1 a.jpg\n', /line 3: no components/],
    ['v1.2 1\njpg 512 1\n', /line 2: expected groups of 4/],
    ['v1.2 1\njpg 100 1 a.jpg\n', /line 2: offset 100/],
    ['v1.2 1\njpg 512 x a.jpg\n', /line 2: bad size/],
    ['v1.2 1\n\n', /line 2: no components/],
    ['v1.2 1\njpg 512 1 a.jpg\ncls 1024 1 b.cls\n', /more sample lines/],
  ];
  for (const [text, message] of bad) t.throws(() => parseDaliIndex(text), { name: 'WebDatasetError', message }, String(message));
});
