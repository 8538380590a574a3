// The trainer on a native BLAS against PyTorch (OpenBLAS) and against the XNNPACK route, on the
// model of `bench train`, measured side by side: every round runs each configuration once, in
// turn, so a busy machine slows all sides alike; the best of the rounds is compared. One JSON line
// per run, then one summary line per thread count:
//   npm run bench -- blas [--threads 1,2] [--rounds 3] [--steps 10] [--python /usr/bin/python3]
//     [--before <dir>]
// --before adds the `bench train` of another checkout (e.g. `git worktree add <dir> <commit>` with
// node_modules) as one more side: the trainer before this work, on the same machine and run.
// PyTorch runs as `OPENBLAS_NUM_THREADS=N python3 bench/torch_mlp.py --threads N`; it is left out
// (said on stderr) where python3 cannot import torch.
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: v } = parseArgs({
  options: {
    threads: { type: 'string', default: [...new Set([1, availableParallelism()])].join(',') },
    rounds: { type: 'string', default: '3' },
    steps: { type: 'string', default: '10' },
    python: { type: 'string', default: '/usr/bin/python3' },
    before: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (v.help) {
  process.stdout.write('npm run bench -- blas [--threads 1,2] [--rounds 3] [--steps 10] [--python /usr/bin/python3] [--before <dir>]\n');
  process.exit(0);
}
const threadCounts = v.threads!.split(',').map((s) => Number(s.trim()));
if (threadCounts.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--threads: positive integers, got ${v.threads}`);
const rounds = Number(v.rounds);
const steps = v.steps!;

const here = (f: string): string => fileURLToPath(new URL(f, import.meta.url));

interface Run {
  impl: 'blas' | 'xnnpack' | 'pytorch' | 'before';
  threads: number;
  images_per_sec: number;
  /** From the fastest step of the run: less sensitive to other jobs on a shared machine. */
  best_step_images_per_sec: number;
  gflops: number;
}

function lastJson(out: string): Record<string, unknown> | null {
  const line = out
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .pop();
  return line ? (JSON.parse(line) as Record<string, unknown>) : null;
}

function run(impl: Run['impl'], threads: number): Run | null {
  const r =
    impl === 'pytorch'
      ? spawnSync(v.python!, [here('./torch_mlp.py'), '--threads', String(threads), '--steps', steps], {
          env: { ...process.env, OPENBLAS_NUM_THREADS: String(threads) },
          encoding: 'utf8',
        })
      : impl === 'before'
        ? spawnSync(process.execPath, ['--import', 'tsx', 'bench/train.ts', '--steps', steps], { cwd: v.before!, encoding: 'utf8' })
        : spawnSync(
            process.execPath,
            ['--import', 'tsx', here('./train.ts'), '--threads', String(threads), '--steps', steps, '--blas', impl === 'blas' ? 'on' : 'off'],
            { encoding: 'utf8' },
          );
  const j = r.status === 0 ? lastJson(r.stdout) : null;
  if (!j) {
    process.stderr.write(`${impl} (${threads} threads) failed: ${(r.stderr || String(r.error ?? '')).trim().split('\n').slice(-3).join(' | ')}\n`);
    return null;
  }
  if (impl === 'blas' && j['matmul'] === 'xnnpack') throw new Error('bench blas: no BLAS library was found (see `npm run bench -- train` stderr)');
  const out: Run = {
    impl,
    threads,
    images_per_sec: Number(j['images_per_sec']),
    best_step_images_per_sec: Math.round((10000 * Number(j['batch_size'])) / Number(j['best_step_ms'])) / 10,
    gflops: Number(j['gflops']),
  };
  process.stdout.write(
    `${JSON.stringify({ bench: 'blas', round: currentRound, ...out, ...(impl === 'blas' ? { matmul: j['matmul'] } : {}), ...(impl === 'pytorch' ? { torch: j['torch'] } : {}) })}\n`,
  );
  return out;
}

const torchOk = spawnSync(v.python!, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
if (!torchOk) process.stderr.write(`${v.python} cannot import torch: PyTorch left out (apt-get install python3-torch)\n`);

let currentRound = 0;
const runs: Run[] = [];
for (currentRound = 0; currentRound < rounds; currentRound++) {
  // XNNPACK (and the trainer before) is one thread whatever --threads says: once per round.
  for (const impl of ['xnnpack', ...(v.before ? ['before' as const] : [])] as const) {
    const x = run(impl, 1);
    if (x) runs.push(x);
  }
  for (const n of threadCounts) {
    for (const impl of ['blas', ...(torchOk ? ['pytorch' as const] : [])] as const) {
      const r = run(impl, n);
      if (r) runs.push(r);
    }
  }
}

const bestOf =
  (key: 'images_per_sec' | 'best_step_images_per_sec') =>
  (impl: Run['impl'], threads?: number): number =>
    Math.max(0, ...runs.filter((r) => r.impl === impl && (threads === undefined || r.threads === threads)).map((r) => r[key]));
const best = bestOf('images_per_sec');
const bestStep = bestOf('best_step_images_per_sec');
const xnn = best('xnnpack');
const before = best('before');
for (const n of threadCounts) {
  const blas = best('blas', n);
  const torch = best('pytorch', n);
  process.stdout.write(
    `${JSON.stringify({
      bench: 'blas',
      summary: true,
      threads: n,
      rounds,
      best_images_per_sec: { blas, pytorch: torchOk ? torch : null, xnnpack: xnn, ...(v.before ? { before } : {}) },
      blas_vs_pytorch: torchOk && torch > 0 ? Number((blas / torch).toFixed(3)) : null,
      blas_vs_pytorch_best_step: torchOk && bestStep('pytorch', n) > 0 ? Number((bestStep('blas', n) / bestStep('pytorch', n)).toFixed(3)) : null,
      blas_vs_xnnpack: xnn > 0 ? Number((blas / xnn).toFixed(2)) : null,
      ...(v.before ? { blas_vs_before: before > 0 ? Number((blas / before).toFixed(2)) : null } : {}),
    })}\n`,
  );
}
