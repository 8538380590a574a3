import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { frameLength, readFrame } from '../../src/pipeline/ring/frame.ts';
import { runShardJob } from '../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../src/pipeline/sources/synthetic.ts';
import { findPython, runPython } from '../helpers/python.ts';
import { tempDir } from '../helpers/tmp.ts';

const root = new URL('../../', import.meta.url).pathname;
const dir = tempDir(t);
const data = join(dir, 'ds');
await runShardJob(openSynthetic({ count: 120, numClasses: 5, width: 12, height: 12, seed: 1 }), {
  out: data,
  res: 12,
  resize: 'max-side',
  encoding: 'jpeg',
  quality: 95,
  samplesPerShard: 50,
  workers: 1,
  seed: 1,
  split: 'train',
  valFraction: 0,
  command: 't',
});

function loaderCli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src/cli/loader.ts'), ...args], { encoding: 'utf8', cwd: root });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const out = join(dir, 'frames.bin');
const r = loaderCli(['dump', '--data', join(data, 'index.json'), '--batches', '3', '--batch-size', '32', '--out', out, '--workers', '2']);

t.test('dump writes K complete frames back to back', async (t) => {
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /shared memory 3 slots x/);
  const bytes = readFileSync(out);
  let at = 0;
  const steps: number[] = [];
  while (at < bytes.length) {
    const len = frameLength(bytes.subarray(at));
    const f = readFrame(bytes.subarray(at, at + len));
    steps.push(f.step);
    t.same([f.n, f.channels, f.height, f.width], [32, 3, 12, 12]);
    at += len;
  }
  t.same(steps, [0, 1, 2]);
  t.equal(at, bytes.length, 'nothing after the last frame');
  t.notOk(existsSync(`${out}.tmp`));
});

t.test('dump --in-memory: the same bytes, with the shards loaded first and said so', async (t) => {
  const mem = join(dir, 'frames-mem.bin');
  const m = loaderCli(['dump', '--data', join(data, 'index.json'), '--batches', '3', '--batch-size', '32', '--out', mem, '--workers', '2', '--in-memory']);
  t.equal(m.code, 0, m.stderr);
  t.match(m.stderr, /shards into memory: 100% of \d+\.\d MiB/);
  t.match(m.stderr, /MiB shards in memory \(loaded in \d+\.\d s\)/);
  t.ok(readFileSync(mem).equals(readFileSync(out)), 'identical to the dump that read the files');
});

const py = findPython(['msgpack', 'numpy']);
t.test('Python msgpack + numpy read the dump', { skip: py ? false : 'no python with msgpack and numpy (CI installs python3-msgpack)' }, async (t) => {
  const script = `
import sys, msgpack, numpy as np
with open(sys.argv[1], 'rb') as f:
    u = msgpack.Unpacker(f, raw=False, max_bin_len=2**31)
    for doc in u:
        n, c, h, w = doc['shape']
        images = np.frombuffer(doc['images'], dtype='<f4').reshape(n, c, h, w)
        labels = np.frombuffer(doc['labels'], dtype='<i4')
        print(doc['epoch'], doc['step'], doc['dtype'], images.shape, int(labels.min()), int(labels.max()), len(doc['keys']), bool(np.isfinite(images).all()))
`;
  const lines = runPython(py!, script, [out]).toString().trim().split('\n');
  t.same(
    lines,
    [0, 1, 2].map((s) => `0 ${s} float32 (32, 3, 12, 12) 0 4 32 True`),
  );
});

t.test('bad arguments are clear errors with the right exit codes', async (t) => {
  const help = loaderCli(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /--batches/);
  const missing = loaderCli(['dump', '--out', join(dir, 'x.bin')]);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /dump needs --data and --out/);
  const nodata = loaderCli(['dump', '--data', join(dir, 'none'), '--out', join(dir, 'y.bin')]);
  t.equal(nodata.code, 1);
  t.match(nodata.stderr, /none/);
  t.notOk(existsSync(join(dir, 'y.bin')));
});
