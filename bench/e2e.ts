// End to end: the trainer fed by the real loader (shards -> workers -> ring -> tfjs step), on
// the best available backend. Reports the trainer's stall % (time waiting for data) next to
// the loader's own rate measured alone, so "the pipeline is faster than the trainer" is shown,
// not assumed. One JSON line. On webgpu it also counts the bytes copied to the device between
// consecutive updates after the first (upload_bytes_per_update: the batch, uint8 packed at 1 byte
// a pixel or float32 at 4, plus labels and per-step scalars), beside a float32 batch's image bytes.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Loader } from '../src/pipeline/loader/loader.ts';
import { runShardJob } from '../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../src/pipeline/sources/synthetic.ts';
import { describeSelection, selectBackend } from '../src/train/backend.ts';
import { countWebGpuUploads } from '../src/train/backends/webgpu-pixels.ts';
import { blasThreadsFor } from '../src/train/blas/cblas.ts';
import { trainConfig } from '../src/train/config.ts';
import { FRAME_DTYPE_CHOICES, resolveFrameDtype, type FrameDtypeChoice } from '../src/train/frame-dtype.ts';
import { train } from '../src/train/train.ts';
import { activeBlas } from '../src/train/wasm-kernels.ts';

const { values: v } = parseArgs({
  options: {
    arch: { type: 'string', default: 'B_2-Wi_256' },
    res: { type: 'string', default: '64' },
    images: { type: 'string', default: '8192' },
    'batch-size': { type: 'string', default: '512' },
    epochs: { type: 'string', default: '3' },
    workers: { type: 'string', default: '1' },
    threads: { type: 'string' },
    backend: { type: 'string', default: 'auto' },
    'frame-dtype': { type: 'string', default: 'auto' },
    'in-memory': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h' },
  },
});
if (v.help) {
  process.stdout.write(
    'npm run bench -- e2e [--arch B_2-Wi_256] [--res 64] [--images 8192] [--batch-size 512] [--epochs 3] [--workers 1] [--threads N (BLAS; default cores - workers)] [--backend auto] [--frame-dtype auto|float32|uint8] [--in-memory (the shards held in shared memory)]\n',
  );
  process.exit(0);
}
const tmp = mkdtempSync(join(tmpdir(), 'bench-e2e-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const res = Number(v.res);
const batchSize = Number(v['batch-size']);
const workers = Number(v.workers);
const data = join(tmp, 'data');
process.stderr.write(`generating ${v.images} synthetic ${res}x${res} images ...\n`);
await runShardJob(openSynthetic({ count: Number(v.images), numClasses: 10, width: res, height: res, seed: 0 }), {
  out: data,
  res,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 2048,
  seed: 0,
  split: 'train',
  valFraction: 0,
  command: 'bench e2e',
});

if (!FRAME_DTYPE_CHOICES.includes(v['frame-dtype'] as FrameDtypeChoice)) throw new Error(`--frame-dtype: one of ${FRAME_DTYPE_CHOICES.join(', ')}`);
const threads = blasThreadsFor({ threads: v.threads === undefined ? undefined : Number(v.threads), workers });
const selection = await selectBackend(v.backend as 'auto', {}, { threads });
process.stderr.write(`${describeSelection(selection)}\n`);
const frameDtype = resolveFrameDtype(v['frame-dtype'] as FrameDtypeChoice, selection.backend);

// The loader alone, same settings, consumer releasing at once.
const inMemory = v['in-memory'] === true;
const alone = await Loader.open({ data, batchSize, mode: 'train', workers, frameDtype, inMemory });
for await (const b of alone.epoch(0)) b.release();
let n = 0;
const t0 = performance.now();
for (let e = 1; e <= 2; e++)
  for await (const b of alone.epoch(e)) {
    n += b.n;
    b.release();
  }
const loaderRate = n / ((performance.now() - t0) / 1000);
await alone.close();

// The same copy of the shards (one load, one copy in memory).
const feed = await Loader.open({ data, batchSize, mode: 'train', workers, lastEpoch: Number(v.epochs) - 1, frameDtype, inMemory: alone.heldShards ?? false });
const counter = countWebGpuUploads();
const atUpdate: number[] = [];
const summary = await train(
  trainConfig({ out: join(tmp, 'run'), arch: v.arch!, epochs: Number(v.epochs), batchSize, checkpointEvery: 0 }),
  { train: feed },
  { log: () => undefined, ...(counter ? { onUpdate: () => atUpdate.push(counter.count.tensorBytes) } : {}) },
);
counter?.stop();
await feed.close();
// Per update after the first (which also uploads the weights); the median, as an epoch's end adds some.
const perUpdate = atUpdate
  .slice(1)
  .map((b, i) => b - atUpdate[i]!)
  .sort((a, b) => a - b);
const uploadPerUpdate = perUpdate.length > 0 ? perUpdate[Math.floor(perUpdate.length / 2)]! : null;
// Per-step waits from the run's metrics: the first batch also pays for thread start-up and JIT,
// so the steady state is reported beside the whole-run figure.
const steps = readFileSync(join(tmp, 'run', 'metrics.jsonl'), 'utf8')
  .trim()
  .split('\n')
  .map((l) => JSON.parse(l) as { type: string; wait_ms?: number; compute_ms?: number })
  .filter((r) => r.type === 'step');
const waits = steps.map((r) => r.wait_ms ?? 0);
const after = steps.slice(1);
const steady =
  after.reduce((a, r) => a + (r.wait_ms ?? 0), 0) /
  Math.max(
    1e-9,
    after.reduce((a, r) => a + (r.wait_ms ?? 0) + (r.compute_ms ?? 0), 0),
  );
process.stdout.write(
  `${JSON.stringify({
    bench: 'e2e',
    arch: v.arch,
    backend: summary.backend,
    frame_dtype: frameDtype,
    in_memory: inMemory,
    res,
    batch_size: batchSize,
    loader_workers: workers,
    matmul: selection.backend === 'wasm' ? (activeBlas()?.name ?? 'xnnpack') : selection.backend,
    blas_threads: activeBlas()?.threads() ?? null,
    loader_images_per_sec: Math.round(loaderRate),
    train_images_per_sec: Math.round(summary.imagesPerSec),
    gflops: summary.gflops,
    stall_pct: summary.stallPct,
    stall_pct_after_first_step: Number((100 * steady).toFixed(2)),
    first_step_wait_ms: Math.round(waits[0] ?? 0),
    max_later_wait_ms: Math.round(Math.max(0, ...waits.slice(1))),
    epochs: summary.epochsCompleted,
    steps: summary.globalStep,
    ...(counter
      ? { upload_bytes_per_update: uploadPerUpdate, float32_image_bytes_per_batch: 4 * batchSize * 3 * res * res, upload_updates_counted: perUpdate.length }
      : {}),
  })}\n`,
);
