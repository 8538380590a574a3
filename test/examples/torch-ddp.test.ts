// The PyTorch DDP consumer (examples/torch-ddp) against a real `loader serve`: 2 ranks on CPU
// with gloo, launched by torchrun. Skips where Debian's python3-torch / python3-zmq are absent.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Loader } from '../../src/pipeline/loader/loader.ts';
import { readSafetensorsFile } from '../../src/model/safetensors.ts';
import { runShardJob } from '../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../src/pipeline/sources/synthetic.ts';
import { findPython, runPython } from '../helpers/python.ts';
import { tempDir } from '../helpers/tmp.ts';

const root = new URL('../../', import.meta.url).pathname;
const example = join(root, 'examples/torch-ddp');
const py = findPython(['torch', 'zmq', 'msgpack', 'numpy']);
const skip = py ? false : 'no python3 with torch, zmq, msgpack and numpy (CI installs python3-torch python3-zmq python3-msgpack)';

interface LogLine {
  epoch: number;
  step: number;
  rank: number;
  keys: string[];
  loss: number;
}
const readLog = (file: string): LogLine[] =>
  readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as LogLine);

t.test('torchrun --nproc_per_node=2 over gloo, fed by one server for both ranks', { skip }, async (t) => {
  const dir = tempDir(t, 'smlp-ddp-');
  const data = join(dir, 'ds');
  await runShardJob(openSynthetic({ count: 100, numClasses: 4, width: 8, height: 8, seed: 6 }), {
    out: data,
    res: 8,
    resize: 'max-side',
    encoding: 'raw',
    quality: 90,
    samplesPerShard: 50,
    workers: 1,
    seed: 6,
    split: 'train',
    valFraction: 0,
    command: 't',
  });
  const endpoint = `ipc://${join(dir, 'serve.sock')}`;
  const server: ChildProcess = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(root, 'src/cli/loader.ts'),
      'serve',
      '--data',
      data,
      '--bind',
      endpoint,
      '--world',
      '2',
      '--ranks',
      'all',
      '--batch-size',
      '8',
      '--epochs',
      '2',
      '--workers',
      '2',
      '--quiet',
    ],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let serverErr = '';
  server.stderr!.on('data', (d: Buffer) => (serverErr += d.toString()));
  const exited = new Promise<number | null>((resolve) => server.on('exit', (c) => resolve(c)));
  t.teardown(() => void server.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    server.stdout!.on('data', (d: Buffer) => d.toString().includes('serving') && resolve());
    server.on('exit', () => reject(new Error(serverErr)));
  });

  const torchrun = (args: string[]): { code: number | null; out: string } => {
    // --redirects/--tee 1: torch 1.13's torchrun on Python 3.11 cannot parse its own default "0"
    // (IntFlag iteration skips the zero member) and fails before starting any worker.
    const r = spawnSync(
      py!,
      [
        '-m',
        'torch.distributed.run',
        '--standalone',
        '--nproc_per_node=2',
        '--redirects',
        '1',
        '--tee',
        '1',
        join(example, 'train_ddp.py'),
        '--endpoint',
        endpoint,
        '--arch',
        'B_2-Wi_32',
        '--epochs',
        '2',
        '--threads',
        '1',
        '--checkpoint-every',
        '3',
        ...args,
      ],
      { cwd: dir, encoding: 'utf8', timeout: 240_000 },
    );
    return { code: r.status, out: `${r.stdout}\n${r.stderr}` };
  };

  // Uninterrupted run: 100 samples / (8 x 2) = 6 steps an epoch, 2 epochs.
  const full = torchrun(['--out', join(dir, 'full'), '--log', join(dir, 'full.log')]);
  t.equal(full.code, 0, full.out);
  t.match(full.out, /6 steps\/epoch of 8 x 2 ranks/);
  const logs = [0, 1].map((r) => readLog(join(dir, `full.log.${r}`)));
  t.same(
    logs.map((l) => l.length),
    [12, 12],
  );
  t.ok(
    logs.every((l, r) => l.every((e) => e.rank === r)),
    'each rank got its own frames',
  );

  // The world-size-1 run with the same seed and the global batch (16).
  const ref = await Loader.open({ data, batchSize: 16, mode: 'train', seed: 0, workers: 1 });
  const global: string[][] = [];
  for (const e of [0, 1])
    for await (const b of ref.epoch(e)) {
      global.push(b.keys);
      b.release();
    }
  await ref.close();
  for (let i = 0; i < 12; i++) {
    const [a, b] = [logs[0]![i]!, logs[1]![i]!];
    t.same([a.epoch, a.step], [b.epoch, b.step]);
    t.equal(a.keys.filter((k) => b.keys.includes(k)).length, 0, `(${a.epoch}, ${a.step}): ranks disjoint`);
    t.same([...a.keys, ...b.keys].sort(), [...global[i]!].sort(), `(${a.epoch}, ${a.step}): union = the world-size-1 batch`);
  }

  // A crash after 5 updates (last checkpoint after 3, frames in flight), then --resume.
  const crashed = torchrun(['--out', join(dir, 'again'), '--log', join(dir, 'crash.log'), '--stop-after', '5']);
  t.equal(crashed.code, 0, crashed.out);
  const pos = JSON.parse(readFileSync(join(dir, 'again/checkpoint/position.json'), 'utf8')) as { epoch: number; step: number };
  t.same(pos, { epoch: 0, step: 3, updates: 3 });
  const resumed = torchrun(['--out', join(dir, 'again'), '--log', join(dir, 'resumed.log'), '--resume', join(dir, 'again/checkpoint')]);
  t.equal(resumed.code, 0, resumed.out);
  t.match(resumed.out, /from \(epoch 0, step 3\)/);
  for (const r of [0, 1]) {
    const after = readLog(join(dir, `resumed.log.${r}`));
    t.same(
      after.map((e) => [e.epoch, e.step, e.keys]),
      logs[r]!.slice(3).map((e) => [e.epoch, e.step, e.keys]),
      `rank ${r}: exactly the next frames`,
    );
  }
  // Same data in the same order from the same state: the same weights, bit for bit.
  const w1 = readSafetensorsFile(join(dir, 'full/model.safetensors')).tensors;
  const w2 = readSafetensorsFile(join(dir, 'again/model.safetensors')).tensors;
  t.same(
    [...w1.keys()].sort(),
    [
      'blocks.0.block.0.bias',
      'blocks.0.block.0.weight',
      'blocks.0.block.2.bias',
      'blocks.0.block.2.weight',
      'blocks.1.block.0.bias',
      'blocks.1.block.0.weight',
      'blocks.1.block.2.bias',
      'blocks.1.block.2.weight',
      'layernorms.0.bias',
      'layernorms.0.weight',
      'layernorms.1.bias',
      'layernorms.1.weight',
      'linear_in.bias',
      'linear_in.weight',
      'linear_out.bias',
      'linear_out.weight',
    ],
    "our (the reference's) names",
  );
  for (const [k, v] of w1) t.same([...w2.get(k)!.data], [...v.data], `${k} identical after crash + resume`);
  const cfg = JSON.parse(readFileSync(join(dir, 'full/config.json'), 'utf8')) as Record<string, unknown>;
  t.match(cfg, { arch: 'B_2-Wi_32', model: 'BottleneckMLP', res: 8, channels: 3, num_classes: 4, input_dim: 192, input_layout: 'CHW' });

  // The Python client's errors: a hello that does not match the server.
  const out = runPython(
    py!,
    `
import sys; sys.path.insert(0, sys.argv[1])
from client import FrameClient, ServeError
c = FrameClient(sys.argv[2], rank=1, world=3, timeout_ms=20000)
try:
    c.hello()
except ServeError as e:
    print(e.code, e.message)
`,
    [example, endpoint],
  ).toString();
  t.match(out, /^mismatch hello does not match this server: world 3 \(server: 2\)/);

  server.kill('SIGINT');
  t.equal(await exited, 0, serverErr);
});

t.test('client.py parses frames without copying, and normalises uint8 frames on the device', { skip }, async (t) => {
  const out = runPython(
    py!,
    `
import sys; sys.path.insert(0, sys.argv[1])
import msgpack, numpy as np
from client import Batch, parse_message
n, c, h, w = 2, 3, 2, 2
px = np.arange(n * c * h * w, dtype=np.uint8)
labels = np.array([3, 1], dtype="<i4")
doc = {"epoch": 1, "step": 4, "rank": 0, "world": 1, "shape": [n, c, h, w], "dtype": "uint8", "keys": ["a", "b"],
       "mean": [10.0, 20.0, 30.0], "std": [2.0, 4.0, 8.0], "labels": labels.tobytes(), "images": px.tobytes()}
buf = msgpack.packb(doc, use_bin_type=True)
fields, bins = parse_message(buf)
b = Batch(buf, fields, bins)
assert b.images.base is not None and not b.images.flags["OWNDATA"], "a view, not a copy"
x, y = b.to_torch("cpu")
expect = (px.reshape(n, c, h, w).astype(np.float32) - np.array([10, 20, 30], np.float32).reshape(1, c, 1, 1)) / np.array([2, 4, 8], np.float32).reshape(1, c, 1, 1)
print(b.epoch, b.step, list(y.tolist()), str(y.dtype), float(np.abs(x.numpy() - expect).max()), sorted(bins))
`,
    [example],
  )
    .toString()
    .trim();
  t.equal(out, "1 4 [3, 1] torch.int64 0.0 ['images', 'labels']");
});
