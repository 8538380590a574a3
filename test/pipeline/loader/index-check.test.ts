// A shard's .idx offsets are checked against the tar headers when a sample is read: an index
// whose label offsets are shifted (by a sample, by 512), whose size is wrong, or that points into
// the middle of data or past the end fails the epoch with a LoaderError naming the shard, the
// offset and the sample key, instead of silently giving wrong labels. A correct shard gives the
// very pixels and labels stored in it, through the .idx as through a header walk (no .idx), for
// DALI v1.1 indexes (no member names) too, and for PAX long member names.
import { cpSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { Loader, type LoaderOptions } from '../../../src/pipeline/loader/loader.ts';
import { checkSampleMembers } from '../../../src/pipeline/loader/member-check.ts';
import { buildSampleTable, SampleTable } from '../../../src/pipeline/loader/sample-table.ts';
import { readFrame } from '../../../src/pipeline/ring/frame.ts';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../../src/pipeline/sources/synthetic.ts';
import { editIdx, member, readIdx } from '../../helpers/damage-shards.ts';
import { findPython, runPython } from '../../helpers/python.ts';
import { readDataset } from '../../helpers/read-shards.ts';
import { encodeDaliIndex } from '../../../src/pipeline/webdataset/dali-index.ts';
import { groupMemberInfos } from '../../../src/pipeline/webdataset/samples.ts';
import { scanTarFile } from '../../../src/pipeline/webdataset/tar-reader.ts';
import { tempDir } from '../../helpers/tmp.ts';
import { epochFrames } from '../../helpers/loader-frames.ts';

const RES = 16;
const dir = tempDir(t);
const pristine = join(dir, 'pristine');
// 16x16x3 raw pixels: a 896-byte .npy, two tar blocks, so an offset can point into its middle.
await runShardJob(openSynthetic({ count: 90, numClasses: 5, width: RES, height: RES, seed: 4 }), {
  out: pristine,
  res: RES,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 30,
  workers: 1,
  seed: 4,
  split: 'train',
  valFraction: 0,
  command: 't',
});
let copies = 0;
function copy(): string {
  const d = join(dir, `copy-${copies++}`);
  cpSync(pristine, d, { recursive: true });
  return d;
}
const opts = (data: string, o: Partial<LoaderOptions> = {}): LoaderOptions => ({
  data: join(data, 'index.json'),
  batchSize: 30,
  mode: 'eval',
  workers: 1,
  ...o,
});

async function frames(t: Test, o: LoaderOptions, epoch = 0): Promise<Buffer[]> {
  const r = await epochFrames(o, epoch);
  t.equal(r.replaced, 0, 'nothing replaced');
  return r.frames;
}

/** Runs epoch 0 and returns the error it fails with (and the loader's replacement count). */
async function failureOnce(o: LoaderOptions): Promise<{ err: Error; replaced: number }> {
  const loader = await Loader.open(o);
  try {
    for await (const b of loader.epoch(0)) b.release();
  } catch (err) {
    return { err: err as Error, replaced: loader.replaced().count };
  } finally {
    await loader.close();
  }
  throw new Error('the epoch did not fail');
}

/**
 * The failure reading samples from the files; with the shards held in memory (--in-memory) the
 * epoch must fail the same way (only a read past the end words its byte counts differently).
 */
async function failure(t: Test, o: LoaderOptions): Promise<{ err: Error; replaced: number }> {
  const fromFile = await failureOnce(o);
  const fromMemory = await failureOnce({ ...o, inMemory: true });
  const counts = (m: string): string => m.replace(/the shard ends first \([^)]*\)/, 'the shard ends first (...)');
  t.equal(counts(fromMemory.err.message), counts(fromFile.err.message), 'the same failure with the shards in memory');
  t.equal(fromMemory.replaced, fromFile.replaced);
  if (fromFile.err.message.includes('the shard ends first')) {
    t.match(fromMemory.err.message, /the shard ends first \(\d+ bytes, the sample ends at \d+\)/, 'read from memory, not the file');
  }
  return fromFile;
}

const MESSAGE = /^(.*): the index does not match the tar at offset (\d+) \(sample "(\d{9})", member \.(cls|npy)\): (.*); the shard's \.idx is wrong/;

/** Checks the failure names `shard`, and an offset and key that the (damaged) .idx really pairs. */
function namesShardAndKey(t: Test, r: { err: Error; replaced: number }, shard: string, detail: RegExp): void {
  t.equal(r.err.name, 'LoaderError');
  t.equal(r.replaced, 0, 'fatal, not a replaced sample');
  const m = MESSAGE.exec(r.err.message);
  if (!t.ok(m, r.err.message)) return;
  const [, path, offset, key, ext, what] = m!;
  t.equal(path, shard);
  t.match(what, detail);
  const listed = readIdx(shard.replace(/\.tar$/, '.idx')).find((s) => s[0]!.name.startsWith(`${key}.`));
  t.ok(listed, `the .idx lists sample ${key}`);
  if (listed) t.equal(member(listed, ext!).offset, Number(offset), 'the offset the .idx gives that member');
}

t.test("label offsets shifted by one sample (sizes and names kept): the next sample's label is no longer read silently", async (t) => {
  const d = copy();
  const shard = join(d, 'train-000001.tar');
  editIdx(shard.replace(/\.tar$/, '.idx'), (s) => {
    for (let i = 0; i + 1 < s.length; i++) member(s[i]!, 'cls').offset = member(s[i + 1]!, 'cls').offset;
  });
  namesShardAndKey(t, await failure(t, opts(d)), shard, /^the member there is "(\d{9})\.cls", the index says "\d{9}\.cls"$/);
});

t.test('label entries (offset, size and name) shifted by one sample: the key differs across the members', async (t) => {
  const d = copy();
  const shard = join(d, 'train-000000.tar');
  editIdx(shard.replace(/\.tar$/, '.idx'), (s) => {
    const labels = s.map((x) => ({ ...member(x, 'cls') }));
    for (let i = 0; i + 1 < s.length; i++) s[i]![0] = labels[i + 1]!;
  });
  namesShardAndKey(t, await failure(t, opts(d)), shard, /^the member there is "\d{9}\.npy", the index says "\d{9}\.npy"$/);
});

t.test('label offsets shifted by 512: no tar header there', async (t) => {
  const d = copy();
  const shard = join(d, 'train-000002.tar');
  editIdx(shard.replace(/\.tar$/, '.idx'), (s) => {
    for (const x of s) member(x, 'cls').offset += 512;
  });
  namesShardAndKey(t, await failure(t, opts(d)), shard, /^no valid tar header precedes it \(bad tar header checksum/);
});

t.test('a wrong size in the .idx (one byte more, one byte less)', async (t) => {
  for (const delta of [1, -1]) {
    const d = copy();
    const shard = join(d, 'train-000001.tar');
    editIdx(shard.replace(/\.tar$/, '.idx'), (s) => {
      member(s[7]!, 'npy').size += delta;
    });
    const r = await failure(t, opts(d, { batchSize: 90 }));
    namesShardAndKey(t, r, shard, new RegExp(`^its tar header says 896 bytes, the index ${896 + delta}$`));
    t.match(r.err.message, /sample "\d{9}", member \.npy/);
  }
});

t.test('an offset into the middle of the data, or past the end of the shard', async (t) => {
  const d = copy();
  const shard = join(d, 'train-000000.tar');
  editIdx(shard.replace(/\.tar$/, '.idx'), (s) => {
    member(s[3]!, 'npy').offset += 512;
  });
  namesShardAndKey(t, await failure(t, opts(d, { batchSize: 90 })), shard, /^no valid tar header precedes it/);
  const e = copy();
  const last = join(e, 'train-000002.tar');
  editIdx(last.replace(/\.tar$/, '.idx'), (s) => {
    member(s[29]!, 'npy').offset = statSync(last).size + 512;
  });
  const r = await failure(t, opts(e, { batchSize: 90 }));
  t.match(r.err.message, /train-000002\.tar: the index does not match the tar at offset \d+ \(sample "\d{9}", member \.cls\): the shard ends first/);
});

t.test('a correct shard: exactly the stored pixels and labels, through the .idx as through a header walk', async (t) => {
  const stored = new Map((await readDataset(pristine)).map((s) => [s.key, s]));
  const frame = (await frames(t, opts(pristine, { batchSize: 90, frameDtype: 'uint8' })))[0]!;
  const f = readFrame(frame);
  t.equal(f.n, 90);
  let pixelsDiffer = 0;
  for (let r = 0; r < f.n; r++) {
    const s = stored.get(f.keys[r]!)!;
    t.equal(f.labels[r], s.label, `label of ${s.key}`);
    // Stored H x W x C, framed C x H x W; an eval centre crop of the whole image at its own size.
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < RES; y++)
        for (let x = 0; x < RES; x++) if (f.images[((r * 3 + c) * RES + y) * RES + x] !== s.pixels![(y * RES + x) * 3 + c]) pixelsDiffer++;
  }
  t.equal(pixelsDiffer, 0, 'every pixel as stored');
  // Train mode, float32: the same frames whether offsets come from the .idx or a header walk.
  const viaIdx = await frames(t, opts(pristine, { mode: 'train', seed: 3 }), 1);
  const walked = copy();
  for (const k of [0, 1, 2]) rmSync(join(walked, `train-00000${k}.idx`));
  const viaWalk = await frames(t, opts(walked, { mode: 'train', seed: 3 }), 1);
  t.equal(viaIdx.length, 3);
  t.same(
    viaWalk.map((b) => b.toString('hex')),
    viaIdx.map((b) => b.toString('hex')),
    'bit-equal frames',
  );
});

/** A DALI v1.1 index (ext offset size, no member names) of the shard's .idx. */
function toV11(idx: string, edit: (s: ReturnType<typeof readIdx>) => void = () => {}): void {
  const s = readIdx(idx);
  edit(s);
  writeFileSync(idx, `v1.1 ${s.length}\n${s.map((x) => x.map((c) => `${c.ext} ${c.offset} ${c.size}`).join(' ')).join('\n')}\n`);
}

t.test('a v1.1 .idx (no member names): correct, it reads as v1.2; shifted labels name two samples', async (t) => {
  const d = copy();
  for (const k of [0, 1, 2]) toV11(join(d, `train-00000${k}.idx`));
  t.match(readFileSync(join(d, 'train-000000.idx'), 'utf8'), /^v1\.1 30\ncls 512 1 npy 1536 896\n/);
  const a = await frames(t, opts(d, { mode: 'train', seed: 5 }));
  const b = await frames(t, opts(pristine, { mode: 'train', seed: 5 }));
  // Keys are in the frame and v1.1 has none: compare labels and pixels.
  t.same(
    a.map((x) => {
      const f = readFrame(x);
      return [
        Buffer.from(f.labels.buffer, f.labels.byteOffset, f.labels.byteLength).toString('hex'),
        Buffer.from(f.images.buffer, f.images.byteOffset, f.images.byteLength).toString('hex'),
      ];
    }),
    b.map((x) => {
      const f = readFrame(x);
      return [
        Buffer.from(f.labels.buffer, f.labels.byteOffset, f.labels.byteLength).toString('hex'),
        Buffer.from(f.images.buffer, f.images.byteOffset, f.images.byteLength).toString('hex'),
      ];
    }),
    'same labels and pixels',
  );
  const e = copy();
  const shard = join(e, 'train-000001.tar');
  toV11(shard.replace(/\.tar$/, '.idx'), (s) => {
    for (let i = 0; i + 1 < s.length; i++) member(s[i]!, 'cls').offset = member(s[i + 1]!, 'cls').offset;
  });
  const r = await failure(t, opts(e));
  t.match(
    r.err.message,
    new RegExp(
      `^${shard.replace(/[.]/g, '\\.')}: the index does not match the tar at offset \\d+ \\(sample "", member \\.npy\\): its members name two samples, "\\d{9}" \\(\\.cls\\) and "\\d{9}" \\(\\.npy\\)`,
    ),
  );
  t.equal(r.replaced, 0);
});

const py = findPython([]);
t.test('long member names (PAX and GNU extension headers): a walk and an .idx both read them', { skip: py ? false : 'no python3 for tarfile' }, async (t) => {
  for (const format of ['PAX_FORMAT', 'GNU_FORMAT']) {
    // The pristine shard's members renamed under a 120-character folder, written by tarfile.
    const tar = join(dir, `long-${format}.tar`);
    runPython(
      py!,
      `import sys, tarfile, io
src, dst, fmt = sys.argv[1], sys.argv[2], getattr(tarfile, sys.argv[3])
with tarfile.open(src) as a, tarfile.open(dst, 'w', format=fmt) as b:
    for m in a.getmembers():
        data = a.extractfile(m).read()
        m.name = 'd' * 120 + '/' + m.name
        b.addfile(m, io.BytesIO(data))`,
      [join(pristine, 'train-000000.tar'), tar, format],
    );
    const o: LoaderOptions = { data: tar, batchSize: 30, mode: 'eval', workers: 1, res: RES };
    const walked = await frames(t, o);
    // An .idx with the full names and the data offsets the walk found.
    const samples = groupMemberInfos(await scanTarFile(tar), { url: tar }).map((x) => ({
      members: Object.entries(x.members).map(([ext, m]) => ({
        ext,
        name: `${x.key}.${ext}`,
        headerOffset: m.offset - 512,
        dataOffset: m.offset,
        size: m.size,
      })),
    }));
    writeFileSync(tar.replace(/\.tar$/, '.idx'), encodeDaliIndex(samples));
    t.same(await frames(t, o), walked, `${format}: the same frames through the .idx`);
    const f = readFrame(walked[0]!);
    t.equal(f.n, 30);
    t.match(f.keys[0], /^d{120}\/\d{9}$/, `${format}: the full name`);
    // Same samples as the original shard, named differently.
    const plain = readFrame((await frames(t, { data: join(pristine, 'train-000000.tar'), batchSize: 30, mode: 'eval', workers: 1, res: RES }))[0]!);
    t.same([...f.labels], [...plain.labels], `${format}: same labels`);
    t.same(
      Buffer.from(f.images.buffer, f.images.byteOffset, f.images.byteLength),
      Buffer.from(plain.images.buffer, plain.images.byteOffset, plain.images.byteLength),
      `${format}: same pixels`,
    );
  }
});

t.test('checkSampleMembers checks a sample at its first read and flags it for every thread', async (t) => {
  const d = copy();
  const shard = join(d, 'train-000000.tar');
  editIdx(shard.replace(/\.tar$/, '.idx'), (s) => {
    member(s[4]!, 'cls').offset = member(s[5]!, 'cls').offset;
  });
  const table = await buildSampleTable([shard]);
  const file = readFileSync(shard);
  for (let i = 0; i < table.count; i++) {
    if (i === 4) continue;
    checkSampleMembers(table, i, file, 0);
    t.equal(table.checked[i], 1);
  }
  t.throws(() => checkSampleMembers(table, 4, file, 0), { name: 'ShardIndexError', message: /sample "\d{9}", member \.cls/ });
  t.equal(table.checked[4], 0, 'a mismatch is not flagged');
  // Flagged (as another thread would after a successful check): not read again.
  new SampleTable(table.buffers).checked[4] = 1;
  t.doesNotThrow(() => checkSampleMembers(table, 4, file, 0));
});
