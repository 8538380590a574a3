import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { frameLength, readFrame } from '../../src/pipeline/ring/frame.ts';
import { ServeClient } from '../../src/pipeline/serve/client.ts';
import { runShardJob } from '../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../src/pipeline/sources/synthetic.ts';
import { tempDir } from '../helpers/tmp.ts';

const root = new URL('../../', import.meta.url).pathname;
const dir = tempDir(t, 'smlp-serve-cli-');
const data = join(dir, 'ds');
await runShardJob(openSynthetic({ count: 100, numClasses: 4, width: 8, height: 8, seed: 2 }), {
  out: data,
  res: 8,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 40,
  workers: 1,
  seed: 2,
  split: 'train',
  valFraction: 0,
  command: 't',
});
const cli = join(root, 'src/cli/loader.ts');
const cleanEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env };
  for (const k of ['RANK', 'WORLD_SIZE', 'SLURM_PROCID', 'SLURM_NTASKS', 'JOB_COMPLETION_INDEX']) delete env[k];
  return env;
};
function loaderCli(args: string[], env: NodeJS.ProcessEnv = cleanEnv()): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', cli, ...args], { encoding: 'utf8', cwd: root, env, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
/** A `loader serve` process, once it has printed its first line (what it serves). */
async function startServe(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ p: ChildProcessWithoutNullStreams; line: string; stderr: () => string; exited: Promise<number | null> }> {
  const p = spawn(process.execPath, ['--import', 'tsx', cli, 'serve', ...args], { cwd: root, env, stdio: 'pipe' });
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => p.on('close', (code) => resolve(code)));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    p.on('exit', () => reject(new Error(`serve exited: ${stderr}`)));
  });
  return { p, line, stderr: () => stderr, exited };
}

/** What the serve tests compare with: `loader dump` of rank 1 of 2 (seed 3, batches of 5). */
function dumpRankOne(batches: number, out: string): ReturnType<typeof loaderCli> {
  const args = ['dump', '--data', data, '--batches', String(batches), '--batch-size', '5', '--rank', '1', '--world', '2'];
  return loaderCli([...args, '--seed', '3', '--out', out, '--workers', '1']);
}

function frames(file: string): ReturnType<typeof readFrame>[] {
  const bytes = readFileSync(file);
  const out = [];
  for (let at = 0; at < bytes.length; ) {
    const len = frameLength(bytes.subarray(at));
    out.push(readFrame(bytes.subarray(at, at + len)));
    at += len;
  }
  return out;
}

t.test('dump --rank/--world: disjoint ranks whose union is the world-size-1 batch', async (t) => {
  const common = ['dump', '--data', data, '--batches', '4', '--seed', '7', '--workers', '1'];
  const r0 = loaderCli([...common, '--batch-size', '6', '--rank', '0', '--world', '2', '--out', join(dir, 'r0.bin')]);
  t.equal(r0.code, 0, r0.stderr);
  // The other rank from torchrun's variables.
  const r1 = loaderCli([...common, '--batch-size', '6', '--out', join(dir, 'r1.bin')], { ...cleanEnv(), RANK: '1', WORLD_SIZE: '2' });
  t.equal(r1.code, 0, r1.stderr);
  const w1 = loaderCli([...common, '--batch-size', '12', '--out', join(dir, 'w1.bin')]);
  t.equal(w1.code, 0, w1.stderr);
  const [a, b, g] = [frames(join(dir, 'r0.bin')), frames(join(dir, 'r1.bin')), frames(join(dir, 'w1.bin'))];
  t.same(
    a.map((f) => [f.rank, f.world]),
    [
      [0, 2],
      [0, 2],
      [0, 2],
      [0, 2],
    ],
  );
  t.same(
    b.map((f) => [f.rank, f.world]),
    [
      [1, 2],
      [1, 2],
      [1, 2],
      [1, 2],
    ],
  );
  for (let s = 0; s < 4; s++) {
    const ka = a[s]!.keys;
    const kb = b[s]!.keys;
    t.equal(ka.filter((k) => kb.includes(k)).length, 0, `step ${s}: ranks disjoint`);
    t.same([...ka, ...kb].sort(), [...g[s]!.keys].sort(), `step ${s}: union = the global batch`);
    // Augmentation is a function of (seed, epoch, sample): the same key has the same pixels.
    const px = (f: ReturnType<typeof readFrame>, k: string): number[] => {
      const i = f.keys.indexOf(k);
      const n = f.channels * f.height * f.width;
      return [...f.images.subarray(i * n, (i + 1) * n)];
    };
    t.same(px(a[s]!, ka[0]!), px(g[s]!, ka[0]!), `step ${s}: same pixels for ${ka[0]}`);
  }
  const bad = loaderCli([...common, '--out', join(dir, 'x.bin')], { ...cleanEnv(), RANK: '2', WORLD_SIZE: '2' });
  t.equal(bad.code, 2);
  t.match(bad.stderr, /rank 2 is not below the world size 2 \(RANK=2 WORLD_SIZE=2\)/);
});

t.test('serve: frames as dump writes them, rank from the environment, Ctrl-C stops cleanly', async (t) => {
  const dumped = dumpRankOne(3, join(dir, 'd.bin'));
  t.equal(dumped.code, 0, dumped.stderr);
  const expected = readFileSync(join(dir, 'd.bin'));
  const serve = await startServe(['--data', data, '--bind', 'tcp://127.0.0.1:*', '--batch-size', '5', '--seed', '3', '--workers', '1', '--epochs', '1'], {
    ...cleanEnv(),
    SLURM_PROCID: '1',
    SLURM_NTASKS: '2',
  });
  const { p, line, exited } = serve;
  const info = JSON.parse(line) as { serving: string[]; ranks: number[]; world: number; steps_per_epoch: number };
  t.same(info.ranks, [1]);
  t.equal(info.world, 2);
  t.equal(info.steps_per_epoch, 10);
  const c = new ServeClient(info.serving[0]!, { receiveTimeoutMs: 20_000 });
  const ready = await c.hello({ world: 2 });
  t.equal(ready.rank, 1);
  const got: Buffer[] = [];
  for await (const f of c.frames()) got.push(Buffer.from(f.bytes));
  c.close();
  t.equal(got.length, 10);
  t.ok(Buffer.concat(got.slice(0, 3)).equals(expected), "the first three frames are byte-identical to dump's file");
  p.kill('SIGINT');
  t.equal(await exited, 0);
  // stderr is read once the process is gone: a pipe of its own, not ordered with stdout's line.
  t.match(serve.stderr(), /ranks 1 of 2 \(SLURM_PROCID=1 SLURM_NTASKS=2\)/);
  t.match(serve.stderr(), /SIGINT: stopping/);
  t.match(serve.stderr(), /stopped after 10 frames/);
});

t.test('serve --ranks all --in-memory: one copy of the shards for both ranks, the frames dump writes', async (t) => {
  const expected = join(dir, 'mem-expected.bin');
  const dumped = dumpRankOne(10, expected);
  t.equal(dumped.code, 0, dumped.stderr);
  const serve = await startServe(
    [
      '--data',
      data,
      '--bind',
      'tcp://127.0.0.1:*',
      '--batch-size',
      '5',
      '--seed',
      '3',
      '--workers',
      '2',
      '--epochs',
      '1',
      '--world',
      '2',
      '--ranks',
      'all',
      '--in-memory',
    ],
    cleanEnv(),
  );
  const { p, line, exited } = serve;
  const info = JSON.parse(line) as { serving: string[]; ranks: number[] };
  t.same(info.ranks, [0, 1]);
  const c = new ServeClient(info.serving[0]!, { receiveTimeoutMs: 20_000 });
  await c.hello({ rank: 1, world: 2 });
  const got: Buffer[] = [];
  for await (const f of c.frames()) got.push(Buffer.from(f.bytes));
  c.close();
  t.ok(Buffer.concat(got).equals(readFileSync(expected)), "rank 1's epoch is byte-identical to dump's file");
  p.kill('SIGINT');
  t.equal(await exited, 0);
  t.equal(serve.stderr().match(/shards into memory: 100% of/g)?.length, 1, 'loaded once');
  t.match(serve.stderr(), /rank 0: loader: .* MiB shards in memory/);
  t.match(serve.stderr(), /rank 1: loader: .* MiB shards in memory/);
});

t.test('serve: usage and bind errors', async (t) => {
  const usage = loaderCli(['serve', '--data', data]);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /serve needs --data and --bind/);
  const help = loaderCli(['serve', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /--bind <endpoint>/);
  const ep = `ipc://${join(dir, 'missing', 's.sock')}`;
  const bind = loaderCli(['serve', '--data', data, '--bind', ep, '--workers', '1', '--batch-size', '5']);
  t.equal(bind.code, 1);
  t.match(bind.stderr, `cannot bind ${ep}`);
  const ranks = loaderCli(['serve', '--data', data, '--bind', 'tcp://127.0.0.1:*', '--world', '2', '--ranks', '0-2']);
  t.equal(ranks.code, 2);
  t.match(ranks.stderr, /--ranks 0-2 is not below the world size 2/);
});
