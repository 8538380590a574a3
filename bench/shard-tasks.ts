// The shard job as one run vs as N tasks run one after another plus the merge, on the same input,
// interleaved round by round (this machine is shared: the ratio within a round is the figure):
//   one:        open the source (listing) + the whole job
//   tasks:      per task: open the source (each task lists) + its part; then the merge
//   plan+tasks: the plan (one listing) + per task: read its slice of the plan + its part; merge
// Each variant reports wall seconds, the listing's (or plan reading's) seconds and the shard job's
// own seconds (its summaries, the merge included): the job-only ratio says what tasks cost beyond
// listing. Each round also times a run of one image: the fixed cost of any run (worker pool
// start, last shard's close), which each extra task pays once. Inputs are generated (no download).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { mergeShardJob } from '../src/pipeline/shard/merge.ts';
import { LocalOutputStore } from '../src/pipeline/shard/output-store.ts';
import { planRange, planSource, readPlan, writePlan } from '../src/pipeline/shard/plan.ts';
import { runShardJob, type ShardJobOptions } from '../src/pipeline/shard/shard-job.ts';
import { openSource } from '../src/pipeline/sources/open-source.ts';
import { makePhotos } from './synthetic-photos.ts';

const { values: v } = parseArgs({
  options: {
    photos: { type: 'string', default: '600' },
    tasks: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    workers: { type: 'string', default: '2' },
    'samples-per-shard': { type: 'string', default: '50' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (v.help) {
  process.stdout.write('npm run bench -- shard-tasks [--photos 600] [--tasks 2] [--rounds 3] [--workers 2] [--samples-per-shard 50]\n');
  process.exit(0);
}
const photos = Number(v.photos);
const N = Number(v.tasks);
const workers = Number(v.workers);
const S = Number(v['samples-per-shard']);
const tmp = mkdtempSync(join(tmpdir(), 'bench-shard-tasks-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

const input = join(tmp, 'photos');
process.stderr.write(`generating ${photos} photos ...\n`);
await makePhotos(input, photos);
const open = () => openSource({ kind: 'imagefolder', paths: [input], split: 'train', seed: 0, res: 64 });
const options = (out: string): ShardJobOptions => ({
  out,
  res: 64,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: S,
  workers,
  seed: 0,
  split: 'train',
  valFraction: 0.1,
  command: 'bench',
});

interface Timing {
  /** Wall seconds of everything. */
  wall: number;
  /** Opening the source (listing), or reading the plan. */
  listing: number;
  /** The shard job's own seconds (its summaries), merge included. */
  job: number;
  /** CPU seconds of this process, all threads (less sensitive to other processes' load than wall time). */
  cpu?: number;
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function withCpu(f: (out: string) => Promise<Timing>, out: string): Promise<Timing> {
  const c0 = cpuSeconds();
  const r = await f(out);
  return { ...r, cpu: cpuSeconds() - c0 };
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await f();
  return [r, (performance.now() - t0) / 1000];
}

async function one(out: string): Promise<Timing> {
  const t0 = performance.now();
  const [source, listing] = await timed(open);
  const summary = await runShardJob(source, options(out));
  return { wall: (performance.now() - t0) / 1000, listing, job: summary.seconds };
}

async function tasks(out: string): Promise<Timing> {
  const t0 = performance.now();
  let listing = 0;
  let job = 0;
  for (let index = 0; index < N; index++) {
    const [source, s] = await timed(open);
    listing += s;
    job += (await runShardJob(source, { ...options(out), task: { index, count: N } })).seconds;
  }
  job += (await mergeShardJob({ out, command: 'bench' })).seconds;
  return { wall: (performance.now() - t0) / 1000, listing, job };
}

async function planned(out: string): Promise<Timing> {
  const t0 = performance.now();
  const [source, listed] = await timed(open);
  const [, planning] = await timed(() => writePlan(source, options(out), {}));
  let listing = listed + planning;
  let job = 0;
  const store = new LocalOutputStore(out);
  for (let index = 0; index < N; index++) {
    const task = { index, count: N };
    const [slice, s] = await timed(async () => {
      const plan = (await readPlan(store))!;
      return planSource(store, plan, planRange(plan.layout, task));
    });
    listing += s;
    job += (await runShardJob(slice, { ...options(out), task })).seconds;
  }
  job += (await mergeShardJob({ out, command: 'bench' })).seconds;
  return { wall: (performance.now() - t0) / 1000, listing, job };
}

/** The fixed cost of any run (a worker pool started, the shard closed, the index written): one image. */
async function fixed(out: string): Promise<Timing> {
  const t0 = performance.now();
  const [source, listing] = await timed(open);
  const summary = await runShardJob(source, { ...options(out), limit: 1, valFraction: 0 });
  return { wall: (performance.now() - t0) / 1000, listing, job: summary.seconds };
}

const variants: [string, (out: string) => Promise<Timing>][] = [
  ['one', one],
  ['tasks', tasks],
  ['plan+tasks', planned],
];
const wallRates: Record<string, number[]> = {};
const jobRates: Record<string, number[]> = {};
const round2 = (x: number): number => Number(x.toFixed(2));
for (let round = 0; round < Number(v.rounds); round++) {
  // Rotate the order each round so no variant always runs first (warm caches, neighbours' load).
  const order = variants.map((_, i) => variants[(i + round) % variants.length]!);
  const timings: Record<string, Timing> = {};
  const startup = await withCpu(fixed, join(tmp, `fixed-${round}`));
  for (const [name, run] of order) {
    const out = join(tmp, `${name}-${round}`);
    timings[name] = await withCpu(run, out);
    rmSync(out, { recursive: true, force: true });
    (wallRates[name] ??= []).push(photos / timings[name]!.wall);
    (jobRates[name] ??= []).push(photos / timings[name]!.job);
  }
  const t = (k: string): Timing => timings[k]!;
  process.stdout.write(
    `${JSON.stringify({
      bench: 'shard-tasks',
      round,
      order: order.map(([n]) => n),
      images: photos,
      tasks: N,
      workers,
      seconds: Object.fromEntries(
        Object.entries(timings).map(([k, x]) => [k, { wall: round2(x.wall), listing: round2(x.listing), job: round2(x.job), cpu: round2(x.cpu!) }]),
      ),
      wall_images_per_sec: Object.fromEntries(Object.entries(timings).map(([k, x]) => [k, Math.round(photos / x.wall)])),
      job_images_per_sec: Object.fromEntries(Object.entries(timings).map(([k, x]) => [k, Math.round(photos / x.job)])),
      fixed_seconds_per_run: round2(startup.job),
      fixed_cpu_seconds_per_run: round2(startup.cpu!),
      ratio_cpu_tasks_vs_one: Number((t('tasks').cpu! / t('one').cpu!).toFixed(3)),
      extra_seconds_tasks: round2(t('tasks').job - t('one').job),
      ratio_wall_tasks_vs_one: Number((t('one').wall / t('tasks').wall).toFixed(3)),
      ratio_job_tasks_vs_one: Number((t('one').job / t('tasks').job).toFixed(3)),
      ratio_job_plan_tasks_vs_one: Number((t('one').job / t('plan+tasks').job).toFixed(3)),
    })}\n`,
  );
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const medians = (r: Record<string, number[]>): Record<string, number> => Object.fromEntries(Object.entries(r).map(([k, x]) => [k, Math.round(median(x))]));
process.stdout.write(
  `${JSON.stringify({
    bench: 'shard-tasks',
    summary: true,
    median_wall_images_per_sec: medians(wallRates),
    median_job_images_per_sec: medians(jobRates),
    median_ratio_wall_tasks_vs_one: Number((median(wallRates['tasks']!) / median(wallRates['one']!)).toFixed(3)),
    median_ratio_job_tasks_vs_one: Number((median(jobRates['tasks']!) / median(jobRates['one']!)).toFixed(3)),
    median_ratio_job_plan_tasks_vs_one: Number((median(jobRates['plan+tasks']!) / median(jobRates['one']!)).toFixed(3)),
  })}\n`,
);
