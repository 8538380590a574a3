import t from 'tap';
import {
  groupMemberInfos,
  groupSamples,
  isMetaName,
  sampleExtensions,
  sampleMember,
  splitKey,
  type WdsSample,
} from '../../../src/pipeline/webdataset/samples.ts';

async function* members(names: string[]): AsyncGenerator<{ name: string; data: Buffer }> {
  for (const name of names) yield { name, data: Buffer.from(name) };
}

async function group(names: string[], url = 'shard.tar'): Promise<WdsSample[]> {
  const out: WdsSample[] = [];
  for await (const s of groupSamples(members(names), { url })) out.push(s);
  return out;
}

/** [key, [ext...]] per sample. */
const shape = (samples: WdsSample[]): [string, string[]][] => samples.map((s) => [s.__key__, sampleExtensions(s)]);

t.test('splitKey is base_plus_ext', async (t) => {
  const cases: [string, [string, string] | null][] = [
    ['a.jpg', ['a', 'jpg']],
    ['a.seg.png', ['a', 'seg.png']],
    ['a.json.gz', ['a', 'json.gz']],
    ['dir/sub/k01.cls', ['dir/sub/k01', 'cls']],
    ['d.x/k.cls', ['d.x/k', 'cls']],
    ['a.b/c.d.e', ['a.b/c', 'd.e']],
    ['k.', ['k', '']],
    ['README', null],
    ['.hidden.txt', null],
    ['dir/noext', null],
    ['a.b/noext', null],
    // The regex's fallback branch lets the key span slashes: Python gives ("dir/", "x").
    ['dir/.x', ['dir/', 'x']],
    ['dir/..x', ['dir/', '.x']],
  ];
  for (const [name, want] of cases) {
    const got = splitKey(name);
    t.strictSame(got === null ? null : [got.key, got.ext], want, name);
  }
});

t.test('splitKey agrees with the plain regex on random names', async (t) => {
  // Python's pattern with "." as [^\n]: the reference for splitKey's fast path.
  const re = /^((?:[^\n]*\/|)[^.]+)[.]([^/]*)$/;
  const alphabet = ['a', 'b', '.', '.', '/', '/', '\n', '\r', 'X'];
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const bad: string[] = [];
  for (let i = 0; i < 20000; i++) {
    let name = '';
    for (let j = rand(9); j >= 0; j--) name += alphabet[rand(alphabet.length)];
    const m = re.exec(name);
    const want = m === null ? null : { key: m[1], ext: m[2] };
    if (JSON.stringify(splitKey(name)) !== JSON.stringify(want)) bad.push(name);
  }
  t.strictSame(bad.slice(0, 5), []);
});

t.test('isMetaName follows tar_file_iterator', async (t) => {
  for (const name of ['__README__', '__', '____', '__meta__/stats.json', '__a.b__/x.txt']) t.ok(isMetaName(name), name);
  for (const name of ['__key__.json', 'x/__meta__', 'dir/__x__/a.txt', '_a_', 'a__']) t.notOk(isMetaName(name), name);
});

t.test('groupSamples: consecutive keys, lowercased extensions, metadata skipped', async (t) => {
  const got = await group([
    '__README__',
    'a.jpg',
    'a.CLS',
    'a.Seg.PNG',
    'README',
    '.hidden.txt',
    'b.cls',
    '__meta__/x.json',
    'b.json',
    'a.txt', // same key again, not consecutive: a new sample, as in webdataset
    'dir/a.cls',
  ]);
  t.strictSame(shape(got), [
    ['a', ['jpg', 'cls', 'seg.png']],
    ['b', ['cls', 'json']],
    ['a', ['txt']],
    ['dir/a', ['cls']],
  ]);
  t.equal(got[0]!.__url__, 'shard.tar');
  t.strictSame(got[0]!['cls'], Buffer.from('a.CLS'), 'payload untouched');
  t.strictSame(Object.keys(got[0]!), ['__key__', '__url__', 'jpg', 'cls', 'seg.png'], 'key order as in Python');
  t.strictSame(await group([]), []);
  t.strictSame(await group(['README', '__x__']), [], 'nothing usable: no samples');
});

t.test('groupSamples: a repeated extension is an error naming url and key', async (t) => {
  await t.rejects(group(['k.jpg', 'k.cls', 'k.JPG'], 'train-0001.tar'), {
    name: 'SampleFormatError',
    url: 'train-0001.tar',
    key: 'k',
    member: 'k.JPG',
    message: /duplicate extension "jpg".*train-0001\.tar.*"k"/,
  });
  // In Python the sample dict already has __key__/__url__, so these names collide too.
  await t.rejects(group(['k.__key__']), { name: 'SampleFormatError', key: 'k' });
  await t.rejects(group(['k.cls', 'k.__url__']), { name: 'SampleFormatError' });
  const ok = await group(['k.jpg', 'j.jpg', 'k.jpg']);
  t.equal(ok.length, 3, 'the same extension under a different key is fine');
});

t.test('groupSamples survives a "__proto__" extension', async (t) => {
  const got = await group(['k.__proto__', 'k.cls']);
  t.strictSame(sampleExtensions(got[0]!), ['__proto__', 'cls']);
  t.equal(Object.getPrototypeOf(got[0]!), Object.prototype);
});

t.test('sampleMember returns a Buffer or names what is missing', async (t) => {
  const [s] = await group(['k.jpg', 'k.cls']);
  t.strictSame(sampleMember(s!, 'cls'), Buffer.from('k.cls'));
  t.throws(() => sampleMember(s!, 'npy'), { name: 'SampleFormatError', key: 'k', url: 'shard.tar', message: /no "npy" member.*jpg, cls/ });
  t.throws(() => sampleMember(s!, '__key__'), { name: 'SampleFormatError' });
});

t.test('groupMemberInfos groups scan output with the same rules', async (t) => {
  const infos = ['__meta__', 'a.jpg', 'a.CLS', 'b.cls', 'noext', 'a.cls'].map((name, i) => ({
    name,
    size: i + 1,
    headerOffset: i * 1024,
    dataOffset: i * 1024 + 512,
  }));
  t.strictSame(groupMemberInfos(infos, { url: 'x.tar' }), [
    { key: 'a', members: { jpg: { offset: 1536, size: 2 }, cls: { offset: 2560, size: 3 } } },
    { key: 'b', members: { cls: { offset: 3584, size: 4 } } },
    { key: 'a', members: { cls: { offset: 5632, size: 6 } } },
  ]);
  t.throws(() => groupMemberInfos([...infos.slice(1, 3), { ...infos[1]!, name: 'a.JPG' }], { url: 'x.tar' }), {
    name: 'SampleFormatError',
    url: 'x.tar',
    key: 'a',
  });
});
