// The shard job: plan which item goes to which shard, run the work on piscina threads, append
// finished records to shards in order, and write the index last. Shard k of a split always
// holds the items at positions [k*S, (k+1)*S) of the split's (seeded) order, minus those that
// failed to decode: so the output is a function of the input and the options alone (not of the
// number of workers or of timing), and a resumed job skips exactly its completed shards. A task
// (`task`) writes only its block of the shards and no index; merge.ts writes the indexes later
// with the same writeJobOutputs, so N tasks + merge give the bytes of one run.
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import { permutation } from '../../shared/random.ts';
import type { Item, Source } from '../sources/types.ts';
import { encodeDaliIndex } from '../webdataset/dali-index.ts';
import { TarWriter, type MemberLocation } from '../webdataset/tar-writer.ts';
import { WIDS_KIND, type WidsIndex } from '../webdataset/wids-index.ts';
import { ShardJobError } from './errors.ts';
import { indexFileName, shardName, type ShardRecord } from './job-state.ts';
import { LocalOutputStore, prepareTaskOutput, type OutputStore } from './output-store.ts';
import { outputPath } from './s3-output-store.ts';
import { ownedShardRanges, shardCount, type ShardTaskId } from './task-id.ts';
import { taskSize, type Encoding, type SampleFormat, type ShardTask, type ShardTaskResult } from './task.ts';
import type { ResizeMode } from '../image/resize.ts';

export interface ShardJobOptions {
  out: string;
  res: number;
  resize: ResizeMode;
  encoding: Encoding;
  quality: number;
  /** Defaults to the source's own (1 for idx, else 3). */
  channels?: 1 | 3;
  samplesPerShard: number;
  workers?: number;
  seed: number;
  split: string;
  valFraction: number;
  limit?: number;
  overwrite?: boolean;
  /** Recorded in the index, so a dataset says how it was made. */
  command: string;
  /** Items per worker task (piscina costs ~50 us a task, so hundreds of images each). */
  taskSize?: number;
  mtime?: number;
  signal?: AbortSignal;
  onProgress?: (p: ShardProgress) => void;
  /**
   * Write only this task's shards (and their records), no index: N tasks on any machines sharing
   * the output write together what one run writes; `mergeShardJob` then writes the indexes.
   */
  task?: Pick<ShardTaskId, 'index' | 'count'>;
  /** Where the output goes (default: the folder `out`). */
  store?: OutputStore;
}

export interface ShardProgress {
  split: string;
  /** Items handled in this run (written or skipped as bad). */
  done: number;
  /** Items this run has to handle; null when streaming without a known count. */
  total: number | null;
  errors: number;
  shardsDone: number;
}

export interface SplitSummary {
  split: string;
  index: string;
  shards: number;
  samples: number;
  skipped: number;
  bytes: number;
}

export interface ShardJobSummary {
  out: string;
  state: 'complete' | 'resumed' | 'fresh';
  /** Empty for a task (the merge writes the indexes). */
  splits: SplitSummary[];
  /** A task's part: its shards (of the job's `of`) and how many were already complete. */
  task?: { index: number; count: number; shards: number; of: number; resumed: number };
  errors: number;
  /** Items processed by this run (not counting shards resumed from disk). */
  processed: number;
  seconds: number;
}

export interface SplitPlan {
  name: string;
  /** Catalog positions in output order (catalog sources). */
  order?: Uint32Array;
  count: number | null;
}

interface PlannedTask {
  split: string;
  shard: number;
  task: ShardTask;
}

interface OpenShard {
  shard: number;
  tar: TarWriter;
  record: ShardRecord;
  members: { members: MemberLocation[] }[];
  /** Appends not yet on disk (their errors surface at close). */
  writes: Promise<void>[];
}

const VERSION = 1;
const MAX_PENDING_WRITES = 8;

/**
 * What one job is, independent of who runs which part: the sample format, the fingerprint (the
 * job's identity in its output), the splits with their item order, and the layout (what the
 * indexes need besides the shard records; written to the output so a merge needs no source).
 */
export interface JobDescription {
  format: SampleFormat;
  fingerprint: string;
  splits: SplitPlan[];
  layout: JobLayout;
}

/** Everything the indexes and errors.jsonl need beyond the shard records. JSON, in this key order. */
export interface JobLayout {
  fingerprint: string;
  description: string;
  classes: string[];
  listingErrors: { file: string; reason: string }[];
  format: SampleFormat;
  samplesPerShard: number;
  seed: number;
  /** The primary split's name (its index is index.json). */
  primary: string;
  splits: { name: string; count: number | null }[];
}

export function describeJob(source: Source, o: ShardJobOptions): JobDescription {
  const channels = o.channels ?? source.channels;
  const format: SampleFormat = {
    res: o.res,
    resize: o.resize,
    encoding: o.encoding,
    quality: o.quality,
    channels,
    mtime: o.mtime ?? 0,
    ...(source.synthetic ? { synthetic: source.synthetic } : {}),
  };
  validate(o, source);
  const splits = planSplits(source, o);
  const fingerprint = JSON.stringify({
    version: VERSION,
    source: source.description,
    count: source.count,
    format,
    samplesPerShard: o.samplesPerShard,
    seed: o.seed,
    split: o.split,
    valFraction: o.valFraction,
    limit: o.limit ?? null,
  });
  const layout: JobLayout = {
    fingerprint,
    description: source.description,
    classes: source.classes,
    listingErrors: source.listingErrors,
    format,
    samplesPerShard: o.samplesPerShard,
    seed: o.seed,
    primary: o.split,
    splits: splits.map((s) => ({ name: s.name, count: s.count })),
  };
  return { format, fingerprint, splits, layout };
}

export async function runShardJob(source: Source, o: ShardJobOptions): Promise<ShardJobSummary> {
  const started = performance.now();
  const { format, fingerprint, splits, layout } = describeJob(source, o);
  const store = o.store ?? new LocalOutputStore(o.out);
  if (o.task) return runTask(source, o, o.task, { format, fingerprint, splits, layout }, store, started);
  const state = await store.prepare(fingerprint, o.overwrite ?? false);
  const records = new Map<string, ShardRecord>();
  let processed = 0;
  let summaries: SplitSummary[] = [];
  let errors = 0;
  if (state !== 'complete') {
    for (const split of splits) {
      const r = await runSplit(source, split, format, o, records, store, [0, Number.POSITIVE_INFINITY]);
      processed += r.processed;
    }
    ({ splits: summaries, errors } = await writeJobOutputs(store, layout, records, o.command, o.out));
    await store.finish();
  }
  return {
    out: o.out,
    state: state === 'complete' ? 'complete' : state === 'resume' ? 'resumed' : 'fresh',
    splits: summaries,
    errors,
    processed,
    seconds: (performance.now() - started) / 1000,
  };
}

async function runTask(
  source: Source,
  o: ShardJobOptions,
  task: Pick<ShardTaskId, 'index' | 'count'>,
  job: JobDescription,
  store: OutputStore,
  started: number,
): Promise<ShardJobSummary> {
  if (!Number.isInteger(task.count) || task.count < 1 || !Number.isInteger(task.index) || task.index < 0 || task.index >= task.count) {
    throw new ShardJobError(`task ${task.index}/${task.count}: the index must be in 0..count-1`);
  }
  if (o.overwrite)
    throw new ShardJobError(
      "--overwrite cannot be combined with tasks: it would remove the other tasks' shards; clear the folder once before starting them",
      o.out,
    );
  const counts = job.splits.map((s) => s.count);
  if (counts.some((c) => c === null)) {
    throw new ShardJobError(
      'a task needs the number of items up front: re-shard a webdataset source from its index .json (which counts the samples), not from shard URLs',
    );
  }
  const S = o.samplesPerShard;
  const perSplit = counts.map((c) => shardCount(c!, S));
  const ranges = ownedShardRanges(perSplit, task);
  const own = new Set<string>();
  job.splits.forEach((split, i) => {
    for (let k = ranges[i]![0]; k < ranges[i]![1]; k++) own.add(shardName(split.name, k));
  });
  const state = await prepareTaskOutput(store, { fingerprint: job.fingerprint, layout: JSON.stringify(job.layout), tasks: task.count }, own);
  const records = new Map<string, ShardRecord>();
  let processed = 0;
  let resumed = 0;
  if (state !== 'complete') {
    for (const [i, split] of job.splits.entries()) {
      const [lo, hi] = ranges[i]!;
      if (lo === hi) continue;
      const r = await runSplit(source, split, job.format, o, records, store, [lo, hi]);
      processed += r.processed;
      resumed += r.resumed;
    }
  }
  return {
    out: o.out,
    state: state === 'complete' ? 'complete' : resumed > 0 ? 'resumed' : 'fresh',
    splits: [],
    task: {
      index: task.index,
      count: task.count,
      shards: own.size,
      of: perSplit.reduce((a, b) => a + b, 0),
      resumed: state === 'complete' ? own.size : resumed,
    },
    errors: [...records.values()].reduce((a, r) => a + r.errors.length, 0),
    processed,
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * The indexes (one per split) and errors.jsonl from the shard records: what a one-process run
 * writes last, and what a merge of tasks writes, so both give the same bytes. Shards are taken in
 * name order; mean/std come from the records' exact per-channel sums.
 */
export async function writeJobOutputs(
  store: OutputStore,
  layout: JobLayout,
  records: ReadonlyMap<string, ShardRecord>,
  command: string,
  out: string,
): Promise<{ splits: SplitSummary[]; errors: number }> {
  const allErrors: { split: string; shard: string; file: string; reason: string }[] = [];
  const perSplit = layout.splits.map((split) => {
    const shards = [...records.entries()].filter(([name]) => name.startsWith(`${split.name}-`)).sort(([a], [b]) => (a < b ? -1 : 1));
    for (const [shard, r] of shards) for (const e of r.errors) allErrors.push({ split: split.name, shard, ...e });
    return { name: split.name, shards };
  });
  const listing = layout.listingErrors.map((e) => ({ split: '', shard: '', ...e }));
  const lines = [...listing, ...allErrors].map((e) => JSON.stringify(e)).join('\n');
  await store.writeFile('errors.jsonl', lines ? `${lines}\n` : '');
  // index.json (the primary split's) is written last: it is what marks the output complete.
  const summaries = new Map<string, SplitSummary>();
  for (const s of [...perSplit.filter((s) => s.name !== layout.primary), ...perSplit.filter((s) => s.name === layout.primary)]) {
    summaries.set(s.name, await writeSplitIndex(store, layout, s.name, s.shards, command, out));
  }
  return { splits: perSplit.map((s) => summaries.get(s.name)!), errors: allErrors.length + listing.length };
}

function validate(o: ShardJobOptions, source: Source): void {
  if (!Number.isInteger(o.res) || o.res < 1 || o.res > 4096) throw new ShardJobError(`--res must be an integer in 1..4096, got ${o.res}`);
  if (!Number.isInteger(o.samplesPerShard) || o.samplesPerShard < 1)
    throw new ShardJobError(`--samples-per-shard must be a positive integer, got ${o.samplesPerShard}`);
  if (!(o.valFraction >= 0 && o.valFraction < 1)) throw new ShardJobError(`--val-fraction must be in [0, 1), got ${o.valFraction}`);
  if (o.quality < 1 || o.quality > 100) throw new ShardJobError(`--quality must be in 1..100, got ${o.quality}`);
  if (!/^[A-Za-z0-9_]+$/.test(o.split)) throw new ShardJobError(`--split must be letters, digits or _, got "${o.split}"`);
  if (o.valFraction > 0 && o.split === 'val') throw new ShardJobError('--val-fraction writes a split named "val": choose another --split');
  if (source.mode === 'stream' && o.valFraction > 0)
    throw new ShardJobError('--val-fraction needs a source with a known item list; re-sharding a stream keeps one split');
}

function planSplits(source: Source, o: ShardJobOptions): SplitPlan[] {
  if (source.mode === 'stream') {
    const count = source.count === null ? (o.limit ?? null) : Math.min(source.count, o.limit ?? Infinity);
    return [{ name: o.split, count }];
  }
  let order = source.shuffle ? permutation(source.count, o.seed) : Uint32Array.from({ length: source.count }, (_, i) => i);
  if (o.limit !== undefined && o.limit < order.length) order = order.subarray(0, o.limit);
  const nVal = Math.round(order.length * o.valFraction);
  const plans: SplitPlan[] = [{ name: o.split, order: order.subarray(0, order.length - nVal), count: order.length - nVal }];
  if (nVal > 0) plans.push({ name: 'val', order: order.subarray(order.length - nVal), count: nVal });
  return plans;
}

async function* catalogTasks(
  source: Source,
  split: SplitPlan,
  format: SampleFormat,
  o: ShardJobOptions,
  done: Set<number>,
  range: [number, number],
): AsyncGenerator<PlannedTask> {
  if (source.mode !== 'catalog' || !split.order) return;
  const S = o.samplesPerShard;
  const T = Math.min(o.taskSize ?? 256, S);
  const shards = Math.min(range[1], Math.ceil(split.order.length / S));
  for (let k = range[0]; k < shards; k++) {
    if (done.has(k)) continue;
    const end = Math.min(split.order.length, (k + 1) * S);
    for (let a = k * S; a < end; a += T) {
      const b = Math.min(end, a + T);
      const loaded = await source.load(split.order.subarray(a, b));
      yield {
        split: split.name,
        shard: k,
        task: {
          format,
          firstSeq: a,
          items: loaded.items,
          ...(loaded.pixels ? { pixels: loaded.pixels } : {}),
          ...(loaded.payload ? { payload: loaded.payload } : {}),
        },
      };
    }
  }
}

async function* streamTasks(
  source: Source,
  split: SplitPlan,
  format: SampleFormat,
  o: ShardJobOptions,
  skipShards: number,
  endShard: number,
): AsyncGenerator<PlannedTask> {
  if (source.mode !== 'stream') return;
  const S = o.samplesPerShard;
  const T = Math.min(o.taskSize ?? 256, S);
  // A task reads past the items before its shards (a stream has no random access) and stops
  // after its last one.
  const end = Math.min(split.count ?? Number.POSITIVE_INFINITY, endShard * S);
  let seq = skipShards * S;
  let items: Item[] = [];
  let chunks: Uint8Array[] = [];
  let size = 0;
  const flush = (): PlannedTask => {
    const payload = new Uint8Array(size);
    let at = 0;
    chunks.forEach((c, i) => {
      payload.set(c, at);
      items[i]!.ref = { kind: 'payload-encoded', offset: at, size: c.length };
      at += c.length;
    });
    const first = seq - items.length;
    const t: PlannedTask = { split: split.name, shard: Math.floor(first / S), task: { format, firstSeq: first, items, payload } };
    items = [];
    chunks = [];
    size = 0;
    return t;
  };
  for await (const { item, bytes } of source.iterate(seq)) {
    if (seq >= end) break;
    items.push(item);
    chunks.push(bytes);
    size += bytes.length;
    seq++;
    // Tasks never straddle a shard boundary.
    if (items.length === T || seq % S === 0) yield flush();
  }
  if (items.length) yield flush();
}

async function completedShards(
  store: OutputStore,
  split: string,
  count: number | null,
  S: number,
  records: Map<string, ShardRecord>,
  range: [number, number],
): Promise<Set<number>> {
  const done = new Set<number>();
  const limit = Math.min(range[1], count === null ? Infinity : Math.ceil(count / S));
  for (let k = range[0]; k < limit; k++) {
    const name = shardName(split, k);
    const r = await store.readRecord(name);
    if (!r) {
      if (count === null) break;
      continue;
    }
    records.set(name, r);
    done.add(k);
  }
  return done;
}

/**
 * File-system errors from writes on open handles (ENOSPC, EIO, EDQUOT ...) carry no path: name
 * the file being written, so "no space left" says where.
 */
export function withPath(err: unknown, path: string): unknown {
  const e = err as NodeJS.ErrnoException;
  if (err instanceof ShardJobError || typeof e?.code !== 'string' || !/^E[A-Z]+$/.test(e.code) || e.path) return err;
  return new ShardJobError(`${e.code}: ${e.message} (while writing)`, path);
}

async function runSplit(
  source: Source,
  split: SplitPlan,
  format: SampleFormat,
  o: ShardJobOptions,
  records: Map<string, ShardRecord>,
  store: OutputStore,
  /** The shards [lo, hi) to write: a task's part, or all of them. */
  range: [number, number],
): Promise<{ processed: number; resumed: number }> {
  const S = o.samplesPerShard;
  const done = await completedShards(store, split.name, split.count, S, records, range);
  // A stream can only resume after a prefix of complete shards.
  let prefix = range[0];
  while (done.has(prefix)) prefix++;
  const tasks = source.mode === 'catalog' ? catalogTasks(source, split, format, o, done, range) : streamTasks(source, split, format, o, prefix, range[1]);
  const total = split.count === null ? null : itemsIn(split.count, S, range) - countItems(done, split.count, S);
  const workers = o.workers ?? availableParallelism();
  const pool = new Piscina({
    filename: new URL('./shard-worker.ts', import.meta.url).href,
    minThreads: workers,
    maxThreads: workers,
    idleTimeout: Infinity,
  });
  const progress: ShardProgress = { split: split.name, done: 0, total, errors: 0, shardsDone: done.size };
  let writer: OpenShard | null = null;
  const inflight: { planned: PlannedTask; result: Promise<ShardTaskResult> }[] = [];
  // Closing a shard (fsync, rename, idx, record) runs in the background while the next shard
  // fills: awaiting the fsync here starved the workers (measured: ~0.7 s idle per 50k CIFAR).
  const closing: Promise<void>[] = [];
  const closeShard = (): void => {
    if (!writer) return;
    const open = writer;
    writer = null;
    const name = shardName(split.name, open.shard);
    closing.push(
      (async () => {
        await Promise.all(open.writes);
        const closed = await open.tar.close();
        const md5sum = (await pool.run(closed.path, { name: 'md5File' })) as string;
        await store.publishShard(name, { size: closed.size, md5sum });
        // DALI rejects an index of zero samples: a shard whose every item failed gets none.
        if (open.members.length) await store.writeFile(name.replace(/\.tar$/, '.idx'), encodeDaliIndex(open.members));
        const record = { ...open.record, nsamples: closed.nsamples, filesize: closed.size, md5sum };
        await store.writeRecord(name, record);
        records.set(name, record);
        progress.shardsDone++;
      })(),
    );
    // Surfaced by the Promise.all below; this only stops an early unhandled-rejection report.
    closing[closing.length - 1]!.catch(() => undefined);
  };
  try {
    let exhausted = false;
    const fill = async (): Promise<void> => {
      while (!exhausted && inflight.length < workers * 6) {
        const next = await tasks.next();
        if (next.done) {
          exhausted = true;
          break;
        }
        const payload = next.value.task.payload;
        inflight.push({
          planned: next.value,
          result: pool.run(next.value.task, payload ? { transferList: [payload.buffer as ArrayBuffer] } : {}) as Promise<ShardTaskResult>,
        });
      }
    };
    await fill();
    while (inflight.length) {
      if (o.signal?.aborted) throw new ShardJobError('interrupted');
      const { planned, result } = inflight.shift()!;
      const r = await result;
      if (writer && writer.shard !== planned.shard) closeShard();
      writer ??= openShard(store, split.name, planned.shard, format);
      const w: OpenShard = writer;
      // Refill the workers before writing, and keep a few writes in flight rather than
      // awaiting each: awaiting the disk here left the workers idle (measured on CIFAR).
      await fill();
      const base = w.tar.bytesWritten;
      const write = w.tar.writeEncoded(
        r.bytes,
        r.samples.flatMap((s) => s.members),
        r.samples.length,
      );
      const written = write.then(() => undefined);
      written.catch(() => undefined); // surfaced by Promise.all(open.writes) at close
      w.writes.push(written);
      if (w.writes.length > MAX_PENDING_WRITES) await w.writes[w.writes.length - 1 - MAX_PENDING_WRITES];
      recordResult(w, r, base);
      progress.done += taskSize(planned.task);
      progress.errors += r.errors.length;
      o.onProgress?.({ ...progress });
    }
    closeShard();
    await Promise.all(closing);
  } catch (err) {
    const open = writer as OpenShard | null;
    if (open) await open.tar.abort().catch(() => undefined);
    await Promise.allSettled([...inflight.map((f) => f.result), ...closing]);
    throw withPath(err, open?.tar.tmpPath ?? o.out);
  } finally {
    await pool.destroy();
  }
  return { processed: progress.done, resumed: done.size };
}

function openShard(store: OutputStore, split: string, shard: number, format: SampleFormat): OpenShard {
  const url = shardName(split, shard);
  const zeros = (): number[] => new Array<number>(format.channels).fill(0);
  return {
    shard,
    tar: new TarWriter(store.shardPath(url), { mtime: format.mtime, md5: false }),
    writes: [],
    record: { url, nsamples: 0, filesize: 0, md5sum: '', errors: [], sum: zeros(), sumSq: zeros(), pixels: 0, maxLabel: -1 },
    members: [],
  };
}

/** Bookkeeping for a task's samples written at file offset `base`: index entries and stats. */
function recordResult(w: OpenShard, r: ShardTaskResult, base: number): void {
  for (const s of r.samples) {
    w.members.push({ members: s.members.map((m) => ({ ...m, headerOffset: m.headerOffset + base, dataOffset: m.dataOffset + base })) });
    if (s.label > w.record.maxLabel) w.record.maxLabel = s.label;
  }
  w.record.errors.push(...r.errors);
  for (let c = 0; c < w.record.sum.length; c++) {
    w.record.sum[c]! += r.sum[c]!;
    w.record.sumSq[c]! += r.sumSq[c]!;
  }
  w.record.pixels += r.pixels;
}

/** Items in shards [lo, hi) of a split of `count` items. */
function itemsIn(count: number, S: number, [lo, hi]: [number, number]): number {
  return Math.max(0, Math.min(count, hi * S) - lo * S);
}

function countItems(done: Set<number>, count: number, S: number): number {
  let n = 0;
  for (const k of done) n += Math.min(S, count - k * S);
  return n;
}

async function writeSplitIndex(
  store: OutputStore,
  layout: JobLayout,
  split: string,
  shards: [string, ShardRecord][],
  command: string,
  out: string,
): Promise<SplitSummary> {
  const format = layout.format;
  const pixels = shards.reduce((a, [, r]) => a + r.pixels, 0);
  const mean: number[] = [];
  const std: number[] = [];
  for (let c = 0; c < format.channels; c++) {
    const s = shards.reduce((a, [, r]) => a + r.sum[c]!, 0);
    const s2 = shards.reduce((a, [, r]) => a + r.sumSq[c]!, 0);
    const m = pixels ? s / pixels : 0;
    mean.push(round4(m));
    std.push(round4(pixels ? Math.sqrt(Math.max(0, s2 / pixels - m * m)) : 0));
  }
  const maxLabel = shards.reduce((a, [, r]) => Math.max(a, r.maxLabel), -1);
  const classes = layout.classes.length > maxLabel ? layout.classes : Array.from({ length: maxLabel + 1 }, (_, i) => layout.classes[i] ?? String(i));
  const samples = shards.reduce((a, [, r]) => a + r.nsamples, 0);
  const skipped = shards.reduce((a, [, r]) => a + r.errors.length, 0);
  const index: WidsIndex = {
    __kind__: WIDS_KIND,
    wids_version: 1,
    name: split,
    shardlist: shards.map(([, r]) => ({ url: r.url, nsamples: r.nsamples, filesize: r.filesize, md5sum: r.md5sum })),
    split,
    num_samples: samples,
    skipped,
    num_classes: classes.length,
    classes,
    resolution: format.res,
    resize: format.resize,
    channels: format.channels,
    encoding: format.encoding,
    ...(format.encoding === 'jpeg' ? { quality: format.quality } : {}),
    layout: 'HWC',
    dtype: 'uint8',
    mean,
    std,
    source: layout.description,
    seed: layout.seed,
    created_by: { tool: 'scaling-mlps-ts shard', command },
    job: layout.fingerprint,
  };
  const file = indexFileName(split, layout.primary);
  await store.writeIndex(file, index);
  return { split, index: outputPath(out, file), shards: shards.length, samples, skipped, bytes: shards.reduce((a, [, r]) => a + r.filesize, 0) };
}

function round4(x: number): number {
  return Math.round(x * 10000) / 10000;
}
