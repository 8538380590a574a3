import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { groupSamples } from '../../../src/pipeline/webdataset/samples.ts';
import { encodeHeader, paddedSize } from '../../../src/pipeline/webdataset/tar-header.ts';
import { readTar, scanTarFile, type TarEntry } from '../../../src/pipeline/webdataset/tar-reader.ts';
import { archiveEnd, encodeSample } from '../../../src/pipeline/webdataset/tar-writer.ts';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

function tempDir(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'wds-reader-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function* chunked(buf: Uint8Array, size: number | number[]): AsyncGenerator<Uint8Array> {
  let pos = 0;
  let i = 0;
  while (pos < buf.length) {
    const n = typeof size === 'number' ? size : size[i++ % size.length]!;
    yield buf.subarray(pos, pos + n);
    pos += n;
  }
}

async function collect(it: AsyncIterable<TarEntry>): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  for await (const e of it) out.push(e);
  return out;
}

const bytes = (n: number, seed = 1): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** Three samples of odd sizes, as our writer lays them out, plus the archive end. */
function sampleTar(): { tar: Uint8Array; body: number } {
  const parts = [
    encodeSample({ key: 's0', members: { cls: Uint8Array.of(0x30), npy: bytes(700) } }).bytes,
    encodeSample({ key: 'dir/s1', members: { cls: Uint8Array.of(0x31), 'seg.png': bytes(512, 3) } }).bytes,
    encodeSample({ key: 's2', members: { txt: new Uint8Array(0) } }).bytes,
  ];
  const body = parts.reduce((a, p) => a + p.length, 0);
  return { tar: concat([...parts, archiveEnd(body)]), body };
}

/** A raw extension member: header with `typeflag` then its padded data. */
function extension(typeflag: string, name: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(512 + paddedSize(data.length));
  encodeHeader({ name, size: data.length, typeflag }, out, 0);
  out.set(data, 512);
  return out;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len++;
  return `${len}${body}`;
}

t.test('readTar yields regular members with offsets, for any chunking', async (t) => {
  const { tar } = sampleTar();
  const expected = [
    ['s0.cls', 1, 0, 512],
    ['s0.npy', 700, 1024, 1536],
    ['dir/s1.cls', 1, 2560, 3072],
    ['dir/s1.seg.png', 512, 3584, 4096],
    ['s2.txt', 0, 4608, 5120],
  ];
  for (const size of [tar.length, 1, 7, 511, 512, 513, 4096, [1, 600, 3, 1024, 511]]) {
    const got = await collect(readTar(chunked(tar, size), { url: 'mem.tar' }));
    t.strictSame(
      got.map((e) => [e.name, e.size, e.headerOffset, e.dataOffset]),
      expected,
      `chunks of ${JSON.stringify(size)}`,
    );
    t.strictSame(got[1]!.data, Buffer.from(bytes(700)));
    t.strictSame(got[3]!.data, Buffer.from(bytes(512, 3)));
    t.equal(got[0]!.typeflag, '0');
  }
});

t.test('copy: members own their memory by default, are views with copy: false', async (t) => {
  const { tar } = sampleTar();
  const source = Buffer.from(tar);
  const copied = await collect(readTar([source]));
  t.equal(copied[1]!.data.buffer.byteLength, 700, 'own ArrayBuffer, transferable');
  const views = await collect(readTar([source], { copy: false }));
  t.equal(views[1]!.data.buffer, source.buffer, 'a view into the source chunk');
  t.strictSame(views[1]!.data, copied[1]!.data);
});

t.test('the end of the stream: zero blocks optional, truncation is an error', async (t) => {
  const { tar, body } = sampleTar();
  const names = async (b: Uint8Array): Promise<string[]> => (await collect(readTar(chunked(b, 333), { url: 'cut.tar' }))).map((e) => e.name);
  t.equal((await names(tar.subarray(0, body))).length, 5, 'no end-of-archive blocks: accepted');
  t.equal((await names(tar.subarray(0, body + 100))).length, 5, 'cut inside the zero blocks: accepted');
  t.equal((await names(tar.subarray(0, 1536 + 700))).length, 2, 'complete data, missing padding: accepted');
  t.strictSame(await names(new Uint8Array(0)), [], 'empty stream: no members');
  await t.rejects(names(tar.subarray(0, 1024 + 100)), {
    name: 'TarFormatError',
    url: 'cut.tar',
    offset: 1024,
    message: /header ends after 100 of 512 bytes.*cut\.tar.*offset 1024/,
  });
  await t.rejects(names(tar.subarray(0, 1536 + 50)), {
    name: 'TarFormatError',
    url: 'cut.tar',
    member: 's0.npy',
    offset: 1536,
    message: /data ends after 50 of 700 bytes/,
  });
  const corrupt = Buffer.from(tar);
  corrupt[2560 + 3] ^= 0x55;
  await t.rejects(names(corrupt), { name: 'TarFormatError', url: 'cut.tar', offset: 2560, message: /checksum/ });
});

t.test('readTar stops at the first zero block and ignores what follows', async (t) => {
  const { tar, body } = sampleTar();
  const withJunk = concat([tar.subarray(0, body + 512), bytes(700)]);
  t.equal((await collect(readTar([withJunk]))).length, 5);
});

t.test('PAX, GNU long names, ustar prefix, links, unknown types', async (t) => {
  const longName = `long/${'x'.repeat(130)}/key.txt`;
  const prefixed = new Uint8Array(1024);
  encodeHeader({ name: 'name.cls', size: 2 }, prefixed, 0);
  Buffer.from('some/dir', 'latin1').copy(prefixed, 345);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : prefixed[i]!;
  Buffer.from(sum.toString(8).padStart(6, '0') + '\0 ', 'latin1').copy(prefixed, 148);
  prefixed.set([0x34, 0x32], 512);
  const symlinkWithSize = new Uint8Array(512);
  encodeHeader({ name: 'link.jpg', size: 5000, typeflag: '2' }, symlinkWithSize, 0);
  const parts = [
    extension('g', 'pax_global_header', Buffer.from(paxRecord('comment', 'ignored'))),
    extension('x', 'PaxHeaders/k', Buffer.from(paxRecord('path', 'ünï/ködé.txt') + paxRecord('mtime', '1700000000.25'))),
    extension('0', 'placeholder.txt', Buffer.from('pax')),
    extension('L', '././@LongLink', Buffer.from(`${longName}\0`)),
    extension('0', 'truncated-name.txt', Buffer.from('gnu')),
    prefixed,
    symlinkWithSize, // tarfile ignores a link's size: no data follows
    extension('V', 'volume label', bytes(600)), // unknown type: its data is skipped
    extension('5', 'dir/', new Uint8Array(0)),
    extension('\0', 'old-style.txt', Buffer.from('v7')),
    extension('7', 'contiguous.bin', Buffer.from('c')),
  ];
  const tar = concat([...parts, archiveEnd(parts.reduce((a, p) => a + p.length, 0))]);
  const got = await collect(readTar(chunked(tar, 100)));
  t.strictSame(
    got.map((e) => [e.name, e.data.toString()]),
    [
      ['ünï/ködé.txt', 'pax'],
      [longName, 'gnu'],
      ['some/dir/name.cls', '42'],
      ['old-style.txt', 'v7'],
      ['contiguous.bin', 'c'],
    ],
  );
  t.equal(got[0]!.headerOffset, 512 * 4, 'headerOffset is the member header, after its extension headers');
  t.equal(got[0]!.dataOffset, got[0]!.headerOffset + 512);

  const sparse = concat([extension('S', 'sparse.bin', bytes(10)), archiveEnd(1024)]);
  await t.rejects(collect(readTar([sparse], { url: 'sp.tar' })), { name: 'TarFormatError', message: /sparse/, url: 'sp.tar' });
  const badPax = concat([extension('x', 'PaxHeaders/k', Buffer.from('99 path=x\n')), archiveEnd(1024)]);
  await t.rejects(collect(readTar([badPax], { url: 'p.tar' })), { name: 'TarFormatError', message: /PAX/, offset: 0 });
});

t.test('PAX size overrides the header size field', async (t) => {
  const data = bytes(1000);
  const header = new Uint8Array(512);
  encodeHeader({ name: 'big.bin', size: 0 }, header, 0);
  const parts = [extension('x', 'PaxHeaders/big', Buffer.from(paxRecord('size', '1000'))), header, data, new Uint8Array(24)];
  const got = await collect(readTar(chunked(concat(parts), 64)));
  t.equal(got.length, 1);
  t.equal(got[0]!.size, 1000);
  t.strictSame(got[0]!.data, Buffer.from(data));
});

t.test('stopping early closes the source; source errors propagate', async (t) => {
  const { tar } = sampleTar();
  let returned = false;
  const source: AsyncIterable<Uint8Array> = {
    [Symbol.asyncIterator]() {
      const inner = chunked(tar, 512);
      return {
        next: () => inner.next(),
        return: async () => {
          returned = true;
          return { done: true, value: undefined };
        },
      };
    },
  };
  for await (const e of readTar(source)) if (e.name === 's0.cls') break;
  t.ok(returned, 'source.return() called');

  async function* failing(): AsyncGenerator<Uint8Array> {
    yield tar.subarray(0, 1024);
    throw new Error('disk on fire');
  }
  await t.rejects(collect(readTar(failing())), { message: 'disk on fire' });
});

t.test('scanTarFile walks headers only and agrees with readTar', async (t) => {
  const dir = tempDir(t);
  const { tar } = sampleTar();
  const path = join(dir, 'a.tar');
  writeFileSync(path, tar);
  const infos = await scanTarFile(path);
  const entries = await collect(readTar([tar]));
  t.strictSame(
    infos,
    entries.map((e) => ({ name: e.name, size: e.size, headerOffset: e.headerOffset, dataOffset: e.dataOffset })),
  );
  const pax = await scanTarFile(join(FIXTURES, 'python-mixed-pax.tar'));
  const paxEntries = await collect(readTar([readFileSync(join(FIXTURES, 'python-mixed-pax.tar'))]));
  t.strictSame(
    pax,
    paxEntries.map((e) => ({ name: e.name, size: e.size, headerOffset: e.headerOffset, dataOffset: e.dataOffset })),
    'same names and offsets for a Python PAX tar',
  );
  t.ok(pax.some((i) => i.name === 'ünï/ködé.txt'));
  t.ok(pax.some((i) => i.name.startsWith('long/xxxx')));

  writeFileSync(join(dir, 'cut.tar'), tar.subarray(0, 1536 + 10));
  await t.rejects(scanTarFile(join(dir, 'cut.tar')), { name: 'TarFormatError', member: 's0.npy', url: join(dir, 'cut.tar'), offset: 1536 });
  writeFileSync(join(dir, 'cuthdr.tar'), tar.subarray(0, 1024 + 10));
  await t.rejects(scanTarFile(join(dir, 'cuthdr.tar')), { name: 'TarFormatError', offset: 1024 });
  const corrupt = Buffer.from(tar);
  corrupt[1024 + 1] ^= 1;
  writeFileSync(join(dir, 'bad.tar'), corrupt);
  await t.rejects(scanTarFile(join(dir, 'bad.tar')), { name: 'TarFormatError', offset: 1024, message: /checksum/ });
});

t.test('committed Python fixtures: names as tarfile reads them', async (t) => {
  const expected = JSON.parse(readFileSync(join(FIXTURES, 'python-mixed.expected.json'), 'utf8')) as Record<
    string,
    { __key__: string; __url__: string; members: [string, string][] }[]
  >;
  for (const name of ['python-mixed-ustar.tar', 'python-mixed-pax.tar']) {
    const tar = readFileSync(join(FIXTURES, name));
    for (const size of [tar.length, 1000, 333]) {
      const got = [];
      for await (const s of groupSamples(readTar(chunked(tar, size), { url: name }), { url: name })) {
        got.push({
          __key__: s.__key__,
          __url__: s.__url__,
          members: Object.entries(s)
            .filter(([k]) => !k.startsWith('__'))
            .map(([k, v]) => [k, (v as Buffer).toString('base64')]),
        });
      }
      t.strictSame(got, expected[name], `${name} in chunks of ${size}`);
    }
  }
});

t.test('a header declaring an enormous size is refused before allocating, naming shard and member', async (t) => {
  // 8 GiB - 1 in octal: the largest ustar size field.
  const header = Buffer.from(encodeHeader({ name: 'k.npy', size: 0 }));
  header.write('77777777777\0', 124, 'latin1');
  let sum = 0;
  header.fill(0x20, 148, 156);
  for (const b of header) sum += b;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  const tar = concat([header, new Uint8Array(1024)]);
  await t.rejects(collect(readTar(chunked(tar, 512), { url: 'big.tar' })), {
    name: 'TarFormatError',
    message: /big\.tar.*k\.npy.*member declares 8589934591 bytes, more than the 1073741824 a sample member may hold|member declares 8589934591 bytes.*big\.tar/,
  });
});
