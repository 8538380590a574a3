import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { decodeHeader } from '../../../src/pipeline/webdataset/tar-header.ts';
import { TarWriter, archiveEnd, encodeSample, validateSample } from '../../../src/pipeline/webdataset/tar-writer.ts';

function tempDir(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'wds-writer-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const bytes = (n: number, seed = 1): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

t.test('encodeSample lays members out in sorted extension order in one buffer', async (t) => {
  const members = { txt: bytes(513), cls: Uint8Array.of(0x37), 'seg.png': bytes(512, 9), jpg: new Uint8Array(0) };
  const { bytes: out, members: locs } = encodeSample({ key: 'train/k01', members }, { mtime: 42 });
  t.strictSame(
    locs.map((m) => m.ext),
    ['cls', 'jpg', 'seg.png', 'txt'],
    'Python sorted() order',
  );
  t.strictSame(
    locs.map((m) => [m.name, m.headerOffset, m.dataOffset, m.size]),
    [
      ['train/k01.cls', 0, 512, 1],
      ['train/k01.jpg', 1024, 1536, 0],
      ['train/k01.seg.png', 1536, 2048, 512],
      ['train/k01.txt', 2560, 3072, 513],
    ],
  );
  t.equal(out.length, 3072 + 1024, 'headers + data padded to 512');
  t.equal(out.byteOffset, 0);
  t.equal(out.buffer.byteLength, out.length, 'owns its ArrayBuffer (transferable, not a pool slice)');
  for (const m of locs) {
    const h = decodeHeader(out, m.headerOffset)!;
    t.equal(h.name, m.name);
    t.equal(h.size, m.size);
    t.equal(h.mtime, 42);
    t.strictSame(out.subarray(m.dataOffset, m.dataOffset + m.size), members[m.ext as keyof typeof members]);
  }
  t.ok(
    out.subarray(512 + 1, 1024).every((b) => b === 0),
    'padding is zero',
  );
  t.ok(
    out.subarray(3072 + 513).every((b) => b === 0),
    'trailing padding is zero',
  );
});

t.test('encodeSample validates keys and extensions, naming the key', async (t) => {
  const one = { cls: Uint8Array.of(0x31) };
  const bad: [string, Record<string, Uint8Array>, RegExp][] = [
    ['a.b', one, /"\." in its last path component/],
    ['dir.x/ké', one, /printable ASCII/],
    ['', one, /empty/],
    ['dir/', one, /ends with "\/"/],
    ['k', {}, /no members/],
    ['k', { CLS: Uint8Array.of(1) }, /not lowercase/],
    ['k', { _meta: Uint8Array.of(1) }, /starts with "_"/],
    ['k', { 'a/b': Uint8Array.of(1) }, /contains "\/"/],
    ['k', { '': Uint8Array.of(1) }, /empty extension/],
    ['k'.repeat(97), one, /at most 100/],
    ['__meta__/x', one, /__metadata__/],
    ['tab\tkey', one, /printable ASCII/],
  ];
  for (const [key, members, message] of bad) {
    t.throws(() => encodeSample({ key, members }), { name: 'SampleFormatError', key, message }, `rejects ${JSON.stringify(key)} ${Object.keys(members)}`);
  }
  t.doesNotThrow(() => validateSample('a.b/c', ['cls']), 'dots in directories are fine');
  t.doesNotThrow(() => validateSample('k'.repeat(96), ['cls']), '100-byte name fits');
  t.throws(() => encodeSample({ key: 'k', members: one }, { mtime: -1 }), { name: 'SampleFormatError', member: 'k.cls' });
});

t.test('archiveEnd pads two zero blocks to a whole record', async (t) => {
  t.equal(archiveEnd(0).length, 10240);
  t.equal(archiveEnd(512).length, 10240 - 512);
  t.equal(archiveEnd(9216).length, 1024, 'exactly fits two blocks');
  t.equal(archiveEnd(9728).length, 10240 + 512, 'spills into a new record');
  t.equal(archiveEnd(10240).length, 10240);
  t.ok(archiveEnd(1536).every((b) => b === 0));
  t.throws(() => archiveEnd(100), { name: 'TarFormatError' });
});

t.test('TarWriter writes atomically with md5, size and absolute locations', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'shard-000000.tar');
  const w = new TarWriter(path, { mtime: 1700000000 });
  const a = await w.write({ key: 's0', members: { cls: Uint8Array.of(0x33), npy: bytes(700) } });
  t.strictSame(
    a.map((m) => [m.name, m.headerOffset, m.dataOffset]),
    [
      ['s0.cls', 0, 512],
      ['s0.npy', 1024, 1536],
    ],
  );
  t.equal(w.bytesWritten, 1024 + 512 + 1024);
  const e1 = encodeSample({ key: 's1', members: { cls: Uint8Array.of(0x31) } }, { mtime: 1700000000 });
  const e2 = encodeSample({ key: 's2', members: { cls: Uint8Array.of(0x32) } }, { mtime: 1700000000 });
  const joined = new Uint8Array(e1.bytes.length + e2.bytes.length);
  joined.set(e1.bytes, 0);
  joined.set(e2.bytes, e1.bytes.length);
  const rel = [...e1.members, ...e2.members.map((m) => ({ ...m, headerOffset: m.headerOffset + e1.bytes.length, dataOffset: m.dataOffset + e1.bytes.length }))];
  const b = await w.writeEncoded(joined, rel, 2);
  t.strictSame(
    b.map((m) => [m.name, m.dataOffset]),
    [
      ['s1.cls', 2560 + 512],
      ['s2.cls', 2560 + 1024 + 512],
    ],
    'writeEncoded shifts relative locations by the file position',
  );
  t.equal(w.nsamples, 3);
  t.ok(existsSync(`${path}.tmp`), 'writes go to the temp file');
  t.notOk(existsSync(path), 'final name appears only on close');
  const r = await w.close();
  t.notOk(existsSync(`${path}.tmp`));
  const file = readFileSync(path);
  t.equal(r.path, path);
  t.equal(r.nsamples, 3);
  t.equal(r.size, file.length);
  t.equal(file.length % 10240, 0, 'whole records');
  t.equal(r.md5, createHash('md5').update(file).digest('hex'), 'incremental md5 equals md5 of the file');
  for (const m of [...a, ...b]) t.equal(decodeHeader(file, m.headerOffset)?.name, m.name);
  t.ok(
    file.subarray(4608).every((x) => x === 0),
    'end of archive is zeros',
  );
  await t.rejects(w.write({ key: 's3', members: { cls: Uint8Array.of(1) } }), { message: /after close/ });
  await t.rejects(w.close(), { message: /twice/ });
});

t.test('TarWriter keeps call order when writes are not awaited', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'order.tar');
  const w = new TarWriter(path);
  const pending = [];
  for (let i = 0; i < 300; i++) pending.push(w.write({ key: `k${String(i).padStart(4, '0')}`, members: { bin: bytes(100 + i * 7, i) } }));
  const locs = (await Promise.all(pending)).flat();
  await w.close();
  const file = readFileSync(path);
  let expectOffset = 0;
  const misplaced: number[] = [];
  for (const [i, m] of locs.entries()) {
    const ok = m.headerOffset === expectOffset && Buffer.from(file.subarray(m.dataOffset, m.dataOffset + m.size)).equals(Buffer.from(bytes(100 + i * 7, i)));
    if (!ok) misplaced.push(i);
    expectOffset += 512 + Math.ceil(m.size / 512) * 512;
  }
  t.equal(locs.length, 300);
  t.strictSame(misplaced, [], 'every sample at its assigned offset with its own bytes');
});

t.test('TarWriter rejects bad input without corrupting the shard, and abort cleans up', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'aborted.tar');
  const w = new TarWriter(path);
  await t.rejects(w.write({ key: 'bad.key', members: { cls: Uint8Array.of(1) } }), { name: 'SampleFormatError' });
  t.equal(w.bytesWritten, 0, 'nothing was appended');
  await t.rejects(w.writeEncoded(new Uint8Array(100), [], 1), { name: 'TarFormatError', message: /multiple of 512/ });
  await w.write({ key: 'ok', members: { cls: Uint8Array.of(1) } });
  await w.abort();
  t.strictSame(readdirSync(dir), [], 'temp file removed, no final file');
  await w.abort();
});

t.test('TarWriter reports an unwritable location on write and close', async (t) => {
  const dir = tempDir(t);
  const w = new TarWriter(join(dir, 'missing-dir', 'x.tar'));
  await t.rejects(w.writeEncoded(new Uint8Array(512), [], 0), { name: 'WebDatasetError', message: /ENOENT/ });
  await t.rejects(w.close(), { name: 'WebDatasetError' });
  await w.abort();
});
