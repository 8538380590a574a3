// loader dump --frame-dtype uint8: frames any msgpack reader takes, normalised by the reader to
// (within half a pixel step and the uint8 kernel's fixed-point error) what the float32 dump holds.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { frameLength, readFrame, type DecodedFrame } from '../../src/pipeline/ring/frame.ts';
import { runShardJob } from '../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../src/pipeline/sources/synthetic.ts';
import { findPython, runPython } from '../helpers/python.ts';
import { tempDir } from '../helpers/tmp.ts';
import { uint8StepBound } from '../helpers/uint8-bound.ts';

const root = new URL('../../', import.meta.url).pathname;
const dir = tempDir(t);
const data = join(dir, 'ds');
await runShardJob(openSynthetic({ count: 80, numClasses: 4, width: 12, height: 10, seed: 3 }), {
  out: data,
  res: 12,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 40,
  workers: 1,
  seed: 3,
  split: 'train',
  valFraction: 0,
  command: 't',
});

function dump(out: string, extra: string[]): { code: number | null; stderr: string } {
  const r = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      join(root, 'src/cli/loader.ts'),
      'dump',
      '--data',
      join(data, 'index.json'),
      '--batches',
      '2',
      '--batch-size',
      '16',
      '--workers',
      '1',
      '--out',
      out,
      ...extra,
    ],
    { encoding: 'utf8', cwd: root },
  );
  return { code: r.status, stderr: r.stderr };
}

function frames(file: string): DecodedFrame[] {
  const bytes = readFileSync(file);
  const out: DecodedFrame[] = [];
  for (let at = 0; at < bytes.length; ) {
    const len = frameLength(bytes.subarray(at));
    out.push(readFrame(bytes.subarray(at, at + len)));
    at += len;
  }
  return out;
}

const u8File = join(dir, 'u8.bin');
const f32File = join(dir, 'f32.bin');
const ru = dump(u8File, ['--frame-dtype', 'uint8']);
const rf = dump(f32File, []);

t.test('dump --frame-dtype uint8 writes uint8 frames of the same batches as the float32 dump', async (t) => {
  t.equal(ru.code, 0, ru.stderr);
  t.equal(rf.code, 0, rf.stderr);
  t.match(ru.stderr, /3x12x12 uint8/);
  const u = frames(u8File);
  const f = frames(f32File);
  t.equal(u.length, 2);
  for (let k = 0; k < 2; k++) {
    const a = u[k]!;
    const b = f[k]!;
    t.equal(a.dtype, 'uint8');
    t.equal(b.dtype, undefined, 'the default stays float32');
    if (a.dtype !== 'uint8') continue;
    t.same(a.keys, b.keys);
    let worst = 0;
    a.images.forEach((v, i) => {
      const c = Math.floor(i / 144) % 3;
      worst = Math.max(worst, Math.abs((v - a.mean[c]!) / a.std[c]! - b.images[i]!) * a.std[c]!);
    });
    // Stored no larger than res: two taps an axis.
    t.ok(worst <= uint8StepBound(2, 2), `frame ${k}: within ${worst.toFixed(5)} pixel steps of float32`);
  }
  t.ok(readFileSync(u8File).length * 3 < readFileSync(f32File).length, 'a quarter of the image bytes');
});

const py = findPython(['msgpack', 'numpy']);
t.test(
  'Python reads and normalises the uint8 dump (the README recipe)',
  { skip: py ? false : 'no python with msgpack and numpy (CI installs python3-msgpack)' },
  async (t) => {
    const script = `
import sys, msgpack, numpy as np
a = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False, max_bin_len=2**32 - 1))
b = list(msgpack.Unpacker(open(sys.argv[2], "rb"), raw=False, max_bin_len=2**32 - 1))
for doc, ref in zip(a, b):
    n, c, h, w = doc["shape"]
    pixels = np.frombuffer(doc["images"], np.uint8).reshape(n, c, h, w)
    mean = np.asarray(doc["mean"], np.float32).reshape(1, c, 1, 1)
    std = np.asarray(doc["std"], np.float32).reshape(1, c, 1, 1)
    images = (pixels - mean) / std
    want = np.frombuffer(ref["images"], "<f4").reshape(n, c, h, w)
    print(doc["dtype"], images.dtype, images.shape, float((np.abs(images - want) * std).max()) <= 0.501)
`;
    const lines = runPython(py!, script, [u8File, f32File]).toString().trim().split('\n');
    t.same(lines, ['uint8 float32 (16, 3, 12, 12) True', 'uint8 float32 (16, 3, 12, 12) True']);
  },
);

t.test('a bad --frame-dtype is a usage error', async (t) => {
  const r = dump(join(dir, 'x.bin'), ['--frame-dtype', 'int8']);
  t.equal(r.code, 2);
  t.match(r.stderr, /--frame-dtype: expected one of float32, uint8, got int8/);
});
