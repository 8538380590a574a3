/**
 * Compatibility with the Python side: tarfile used as webdataset's TarWriter uses it, the
 * webdataset grouping rules (fixtures/wds_reference.py), and numpy's .npy files.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import t from 'tap';
import { decodeNpy, encodeCls, encodeJson, encodeNpy, npyHeader, type NpyDtype } from '../../../src/pipeline/webdataset/codecs.ts';
import { readShard } from '../../../src/pipeline/webdataset/open-url.ts';
import { isMetaName, splitKey } from '../../../src/pipeline/webdataset/samples.ts';
import { TarFileReader } from '../../../src/pipeline/webdataset/tar-index.ts';
import { TarWriter, archiveEnd, encodeSample, type SampleMembers } from '../../../src/pipeline/webdataset/tar-writer.ts';
import { findPython, runPython } from '../../helpers/python.ts';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
const REFERENCE = readFileSync(join(FIXTURES, 'wds_reference.py'), 'utf8');
const py = findPython([]);
const pyNumpy = findPython(['numpy']);
const NO_PYTHON = py === null ? 'no python3 found (tried python3, /usr/bin/python3)' : false;
const NO_NUMPY = pyNumpy === null ? 'no python3 with numpy found (tried python3, /usr/bin/python3)' : false;

const dir = mkdtempSync(join(tmpdir(), 'wds-py-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const ref = (args: string[], input?: Buffer, interpreter = py): Buffer => runPython(interpreter!, REFERENCE, args, input);

interface PySample {
  __key__: string;
  __url__: string;
  members: [string, string][];
}
interface PyRead {
  samples: PySample[];
  error?: string;
}

const pyRead = (url: string, path: string): PyRead => JSON.parse(ref(['read', url, path]).toString('utf8')) as PyRead;

/** Our reading of a shard in the same shape as the Python script prints. */
async function ourRead(url: string): Promise<PyRead> {
  const samples: PySample[] = [];
  try {
    for await (const s of readShard(url)) {
      samples.push({
        __key__: s.__key__,
        __url__: s.__url__,
        members: Object.entries(s)
          .filter(([k]) => !k.startsWith('__'))
          .map(([k, v]) => [k, (v as Buffer).toString('base64')]),
      });
    }
    return { samples };
  } catch (e) {
    return { samples, error: `${(e as Error).name}: ${(e as Error).message}` };
  }
}

function firstDifference(a: Uint8Array, b: Uint8Array): string {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return `first difference at byte ${i} (header field offset ${i % 512})`;
  return a.length === b.length ? 'identical' : `lengths ${a.length} vs ${b.length}`;
}

const blob = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 131 + seed * 17) & 0xff);

const SAMPLES: SampleMembers[] = [
  { key: 'n01440764/000000', members: { cls: encodeCls(0), npy: encodeNpy(blob(64 * 48 * 3, 1), [64, 48, 3]) } },
  { key: 'n01440764/000001', members: { cls: encodeCls(1), jpg: blob(511, 2), 'seg.png': blob(512, 3), txt: new Uint8Array(0) } },
  { key: 's2', members: { 'json.gz': gzipSync(Buffer.from('{"a": 1}')), json: encodeJson({ k: [1, 2] }), cls: encodeCls(21841) } },
  { key: 'k'.repeat(96), members: { cls: blob(513, 4), bin: blob(10000, 5) } },
  { key: 'a.b/c', members: { id: encodeCls(7), index: encodeCls(8), cls2: encodeCls(9) } },
];

function toPythonSpec(samples: SampleMembers[], mtime: number): Buffer {
  return Buffer.from(
    JSON.stringify({
      mtime,
      samples: samples.map((s) => ({
        __key__: s.key,
        ...Object.fromEntries(Object.entries(s.members).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
      })),
    }),
  );
}

t.test('our shards are byte-identical to tarfile written as webdataset.TarWriter does', { skip: NO_PYTHON }, async (t) => {
  for (const mtime of [0, 1700000000]) {
    const path = join(dir, `ours-${mtime}.tar`);
    const w = new TarWriter(path, { mtime });
    for (const s of SAMPLES) await w.write(s);
    const info = await w.close();
    const ours = readFileSync(path);
    for (const format of ['', 'USTAR_FORMAT']) {
      const theirs = ref(['write', ...(format ? [format] : [])], toPythonSpec(SAMPLES, mtime));
      t.equal(info.size, theirs.length, `size, mtime ${mtime} ${format || 'default (PAX) format'}`);
      t.ok(Buffer.compare(ours, theirs) === 0, `bytes, mtime ${mtime} ${format || 'default format'}: ${firstDifference(ours, theirs)}`);
    }
    // encodeSample + archiveEnd, as worker threads use them, give the same bytes too.
    const parts = SAMPLES.map((s) => encodeSample(s, { mtime }).bytes);
    const body = Buffer.concat(parts);
    t.ok(Buffer.concat([body, archiveEnd(body.length)]).equals(ours), 'encodeSample + archiveEnd == TarWriter');
  }
});

t.test('Python reads our shards into the samples we read back', { skip: NO_PYTHON }, async (t) => {
  const path = join(dir, 'ours-0.tar');
  const theirs = pyRead(path, path);
  t.notOk(theirs.error);
  t.equal(theirs.samples.length, SAMPLES.length);
  t.strictSame(await ourRead(path), theirs);
  t.strictSame(
    theirs.samples.map((s) => [s.__key__, s.members.map(([k]) => k)]),
    SAMPLES.map((s) => [s.key, Object.keys(s.members).sort()]),
    'keys and sorted extensions survive the round trip',
  );
});

t.test('we read Python-written tars as webdataset groups them', { skip: NO_PYTHON }, async (t) => {
  const variants: [string, string, boolean][] = [
    ['ustar.tar', 'USTAR_FORMAT', false],
    ['gnu.tar', 'GNU_FORMAT', false],
    ['pax.tar', 'PAX_FORMAT', false],
    ['pax.tar.gz', 'PAX_FORMAT', true],
    ['gnu-misnamed.tar', 'GNU_FORMAT', true],
  ];
  for (const [name, format, gz] of variants) {
    const path = join(dir, name);
    ref(['mixed', format, path, ...(gz ? ['gz'] : [])]);
    const theirs = pyRead(path, path);
    t.notOk(theirs.error, `${name}: Python reads it`);
    t.strictSame(await ourRead(path), theirs, `${name}: same samples, keys, extensions and bytes`);
    if (!gz) {
      const r = await TarFileReader.open(path);
      t.strictSame(
        r.samples.map((s) => [s.key, Object.keys(s.members)]),
        theirs.samples.map((s) => [s.__key__, s.members.map(([k]) => k)]),
        `${name}: random-access index groups the same way`,
      );
      await r.close();
    }
  }
});

t.test('the committed fixtures are what Python writes and reads today', { skip: NO_PYTHON }, async (t) => {
  const out = mkdtempSync(join(dir, 'fixtures-'));
  ref(['fixtures', out]);
  for (const name of ['python-mixed-ustar.tar', 'python-mixed-gnu.tar.gz', 'python-mixed-pax.tar', 'python-mixed.expected.json']) {
    t.ok(readFileSync(join(out, name)).equals(readFileSync(join(FIXTURES, name))), `${name} is up to date (regenerate: python3 wds_reference.py fixtures .)`);
  }
});

t.test('a repeated extension fails in Python and here', { skip: NO_PYTHON }, async (t) => {
  const a = encodeSample({ key: 'dup', members: { jpg: blob(3, 1) } }).bytes;
  const b = encodeSample({ key: 'dup', members: { jpg: blob(3, 2), cls: encodeCls(1) } }).bytes;
  const body = Buffer.concat([a, b]);
  const path = join(dir, 'dup.tar');
  writeFileSync(path, Buffer.concat([body, archiveEnd(body.length)]));
  t.match(pyRead(path, path).error, /^ValueError: .*duplicate/);
  t.match((await ourRead(path)).error, /^SampleFormatError: duplicate extension "jpg".*"dup"/);
});

t.test("splitKey and isMetaName agree with Python's re on odd names", { skip: NO_PYTHON }, async (t) => {
  const alphabet = ['a', 'B', '_', '_', '.', '.', '/', '/', '\n', '\r', 'é'];
  let seed = 777;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const names = ['dir/.x', 'dir/..x', '.hidden', '__meta__', '__a__\n', '__a.b__\n', '__x__/y.z', 'a.b\n', 'a\n.b', 'k.JPG'];
  for (let i = 0; i < 3000; i++) {
    let name = rand(3) === 0 ? '__' : '';
    for (let j = rand(8); j >= 0; j--) name += alphabet[rand(alphabet.length)];
    names.push(name);
  }
  const theirs = JSON.parse(ref(['names'], Buffer.from(JSON.stringify(names))).toString('utf8')) as [[string, string] | null, boolean][];
  const bad = names.filter((name, i) => {
    const k = splitKey(name);
    return JSON.stringify([k === null ? null : [k.key, k.ext], isMetaName(name)]) !== JSON.stringify(theirs[i]);
  });
  t.strictSame(bad.slice(0, 5), [], `${names.length} names`);
});

t.test('npyHeader/encodeNpy are byte-identical to numpy.save', { skip: NO_NUMPY }, async (t) => {
  const cases: [number[], NpyDtype][] = [
    [[64, 48, 3], '|u1'],
    [[28, 28, 1], '|u1'],
    [[32, 32, 3], '|u1'],
    [[5], '|u1'],
    [[], '|u1'],
    [[0], '|u1'],
    [[3, 0, 2], '|u1'],
    [[1000003], '|u1'],
    [[2, 3], '<f4'],
    [[4], '<i8'],
    [[2, 2], '<u2'],
    [[3], '<f8'],
    [[1, 2], '<i4'],
  ];
  const size: Record<NpyDtype, number> = { '|u1': 1, '<u2': 2, '<i4': 4, '<f4': 4, '<f8': 8, '<i8': 8 };
  for (const [shape, dtype] of cases) {
    const data = blob(shape.reduce((a, b) => a * b, 1) * size[dtype], shape.length);
    if (dtype === '<f4' || dtype === '<f8') data.fill(0); // no NaN bit patterns to worry about
    const theirs = ref(['npy-save', dtype, shape.join(',')], Buffer.from(data), pyNumpy);
    const ours = encodeNpy(data, shape, dtype);
    t.ok(Buffer.from(ours).equals(theirs), `(${shape.join(', ')}) ${dtype}: ${firstDifference(ours, theirs)}`);
    t.ok(Buffer.from(npyHeader(shape, dtype)).equals(theirs.subarray(0, theirs.length - data.length)), 'header alone');
  }
});

t.test('numpy.load reads our .npy; we read numpy-written ones', { skip: NO_NUMPY }, async (t) => {
  const data = blob(64 * 48 * 3, 9);
  const loaded = JSON.parse(ref(['npy-load'], Buffer.from(encodeNpy(data, [64, 48, 3])), pyNumpy).toString()) as {
    shape: number[];
    dtype: string;
    data: string;
  };
  t.strictSame(loaded.shape, [64, 48, 3]);
  t.equal(loaded.dtype, '|u1');
  t.equal(loaded.data, Buffer.from(data).toString('base64'), 'same values in C order');

  const f32 = decodeNpy(ref(['npy-special', 'f32'], undefined, pyNumpy));
  t.strictSame([f32.dtype, f32.shape], ['<f4', [2, 2]]);
  t.strictSame(Array.from(new Float32Array(Uint8Array.from(f32.data).buffer)), [1.5, -2, 0.25, 3]);
  const v2 = decodeNpy(ref(['npy-special', 'v2'], undefined, pyNumpy));
  t.strictSame([v2.dtype, v2.shape, v2.dataOffset % 64], ['<i4', [2, 3], 0]);
  t.strictSame(Array.from(new Int32Array(Uint8Array.from(v2.data).buffer)), [0, 1, 2, 3, 4, 5]);
  const be = decodeNpy(ref(['npy-special', 'bigendian'], undefined, pyNumpy));
  t.strictSame([be.dtype, be.shape, Buffer.from(be.data).readInt32BE(12)], ['>i4', [4], 3], 'dtype string kept for the caller');
  const scalar = decodeNpy(ref(['npy-special', 'scalar'], undefined, pyNumpy));
  t.strictSame([scalar.shape, Buffer.from(scalar.data).readBigInt64LE(0)], [[], 42n]);
  t.throws(() => decodeNpy(ref(['npy-special', 'fortran'], undefined, pyNumpy)), { name: 'SampleFormatError', message: /Fortran/ });
});
