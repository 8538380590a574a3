import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { encodeCls, encodeNpy } from '../../../src/pipeline/webdataset/codecs.ts';
import { TarFileReader } from '../../../src/pipeline/webdataset/tar-index.ts';
import { TarWriter } from '../../../src/pipeline/webdataset/tar-writer.ts';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
const dir = mkdtempSync(join(tmpdir(), 'wds-index-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const image = (i: number): Uint8Array => Uint8Array.from({ length: 8 * 8 * 3 }, (_, j) => (i + j) & 0xff);

t.test('random access by sample index and member offset', async (t) => {
  const path = join(dir, 'r.tar');
  const w = new TarWriter(path);
  for (let i = 0; i < 50; i++) await w.write({ key: `s${i}`, members: { cls: encodeCls(i), npy: encodeNpy(image(i), [8, 8, 3]) } });
  await w.close();

  const r = await TarFileReader.open(path);
  t.teardown(() => r.close());
  t.equal(r.samples.length, 50);
  t.strictSame(Object.keys(r.samples[0]!.members), ['cls', 'npy']);
  t.equal(r.samples[17]!.key, 's17');
  const file = readFileSync(path);
  for (const i of [0, 17, 49, 3]) {
    const s = r.samples[i]!;
    const cls = await r.readMember(s.members['cls']!.offset, s.members['cls']!.size);
    t.equal(Buffer.from(cls).toString(), String(i));
    const npy = r.readMemberSync(s.members['npy']!.offset, s.members['npy']!.size);
    t.strictSame(Buffer.from(npy.subarray(128)), Buffer.from(image(i)), `sample ${i} npy payload`);
    t.strictSame(Buffer.from(npy), file.subarray(s.members['npy']!.offset, s.members['npy']!.offset + npy.length));
  }
  const into = new Uint8Array(1000).fill(9);
  const view = await r.readMember(r.samples[2]!.members['cls']!.offset, 1, into);
  t.equal(view.length, 1);
  t.equal(view.buffer, into.buffer, 'reads into the caller buffer');
  t.equal(into[0], 0x32);
  t.equal(into[1], 9);
  const all = await r.readSample(5);
  t.equal(Buffer.from(all['cls']!).toString(), '5');
  await t.rejects(r.readMember(file.length - 10, 20), { name: 'TarFormatError', url: path, message: /outside/ });
  t.throws(() => r.readMemberSync(0, 10, new Uint8Array(5)), RangeError);
  await t.rejects(r.readSample(50), RangeError);
});

t.test('indexes Python-written tars (PAX names) and refuses broken ones', async (t) => {
  const r = await TarFileReader.open(join(FIXTURES, 'python-mixed-pax.tar'));
  t.teardown(() => r.close());
  const expected = JSON.parse(readFileSync(join(FIXTURES, 'python-mixed.expected.json'), 'utf8')) as Record<
    string,
    { __key__: string; members: [string, string][] }[]
  >;
  const want = expected['python-mixed-pax.tar']!;
  t.strictSame(
    r.samples.map((s) => [s.key, Object.keys(s.members)]),
    want.map((s) => [s.__key__, s.members.map((m) => m[0])]),
  );
  for (const [i, s] of r.samples.entries()) {
    for (const [ext, b64] of want[i]!.members) {
      const m = s.members[ext]!;
      t.equal(Buffer.from(await r.readMember(m.offset, m.size)).toString('base64'), b64, `${s.key}.${ext}`);
    }
  }
  const bad = join(dir, 'bad.tar');
  writeFileSync(bad, Buffer.concat([Buffer.from('not a tar'), Buffer.alloc(1024)]));
  await t.rejects(TarFileReader.open(bad), { name: 'TarFormatError', url: bad, offset: 0 });
  await t.rejects(TarFileReader.open(join(dir, 'missing.tar')), { code: 'ENOENT' });
});

t.test('a closed reader refuses reads', async (t) => {
  const r = await TarFileReader.open(join(FIXTURES, 'python-mixed-ustar.tar'));
  await r.close();
  await r.close();
  await t.rejects(r.readMember(512, 1), { name: 'WebDatasetError', message: /closed/ });
});
