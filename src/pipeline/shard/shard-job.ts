// The shard job: plan which item goes to which shard, run the work on piscina threads, append
// finished records to shards in order, and write the index last. Shard k of a split always
// holds the items at positions [k*S, (k+1)*S) of the split's (seeded) order, minus those that
// failed to decode: so the output is a function of the input and the options alone (not of the
// number of workers or of timing), and a resumed job skips exactly its completed shards.
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Piscina } from 'piscina';
import { permutation } from '../../shared/random.ts';
import type { Item, Source } from '../sources/types.ts';
import { encodeDaliIndex } from '../webdataset/dali-index.ts';
import { TarWriter, type MemberLocation } from '../webdataset/tar-writer.ts';
import { WIDS_KIND, writeWidsIndex, type WidsIndex } from '../webdataset/wids-index.ts';
import { ShardJobError } from './errors.ts';
import { indexFileName, prepareOutDir, readShardRecord, removePartialDir, shardName, writeAtomic, writeShardRecord, type ShardRecord } from './job-state.ts';
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
  splits: SplitSummary[];
  errors: number;
  /** Items processed by this run (not counting shards resumed from disk). */
  processed: number;
  seconds: number;
}

interface SplitPlan {
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

export async function runShardJob(source: Source, o: ShardJobOptions): Promise<ShardJobSummary> {
  const started = performance.now();
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
  const state = await prepareOutDir(o.out, fingerprint, o.overwrite ?? false);
  const records = new Map<string, ShardRecord>();
  let processed = 0;
  let errors = 0;
  if (state !== 'complete') {
    for (const split of splits) {
      const r = await runSplit(source, split, format, o, records);
      processed += r.processed;
    }
  }
  const summaries: SplitSummary[] = [];
  const allErrors: { split: string; shard: string; file: string; reason: string }[] = [];
  if (state !== 'complete') {
    for (const split of splits) {
      const shards = [...records.entries()].filter(([name]) => name.startsWith(`${split.name}-`)).sort(([a], [b]) => (a < b ? -1 : 1));
      for (const [shard, r] of shards) for (const e of r.errors) allErrors.push({ split: split.name, shard, ...e });
      summaries.push(await writeSplitIndex(source, split, shards, format, o, fingerprint));
    }
    const listing = source.listingErrors.map((e) => ({ split: '', shard: '', ...e }));
    const lines = [...listing, ...allErrors].map((e) => JSON.stringify(e)).join('\n');
    await writeAtomic(join(o.out, 'errors.jsonl'), lines ? `${lines}\n` : '');
    await removePartialDir(o.out);
    errors = allErrors.length + listing.length;
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

async function* catalogTasks(source: Source, split: SplitPlan, format: SampleFormat, o: ShardJobOptions, done: Set<number>): AsyncGenerator<PlannedTask> {
  if (source.mode !== 'catalog' || !split.order) return;
  const S = o.samplesPerShard;
  const T = Math.min(o.taskSize ?? 256, S);
  const shards = Math.ceil(split.order.length / S);
  for (let k = 0; k < shards; k++) {
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

async function* streamTasks(source: Source, split: SplitPlan, format: SampleFormat, o: ShardJobOptions, skipShards: number): AsyncGenerator<PlannedTask> {
  if (source.mode !== 'stream') return;
  const S = o.samplesPerShard;
  const T = Math.min(o.taskSize ?? 256, S);
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
    if (split.count !== null && seq >= split.count) break;
    items.push(item);
    chunks.push(bytes);
    size += bytes.length;
    seq++;
    // Tasks never straddle a shard boundary.
    if (items.length === T || seq % S === 0) yield flush();
  }
  if (items.length) yield flush();
}

async function completedShards(out: string, split: string, count: number | null, S: number, records: Map<string, ShardRecord>): Promise<Set<number>> {
  const done = new Set<number>();
  const limit = count === null ? Infinity : Math.ceil(count / S);
  for (let k = 0; k < limit; k++) {
    const name = shardName(split, k);
    const r = await readShardRecord(out, name);
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
): Promise<{ processed: number }> {
  const S = o.samplesPerShard;
  const done = await completedShards(o.out, split.name, split.count, S, records);
  // A stream can only resume after a prefix of complete shards.
  let prefix = 0;
  while (done.has(prefix)) prefix++;
  const tasks = source.mode === 'catalog' ? catalogTasks(source, split, format, o, done) : streamTasks(source, split, format, o, prefix);
  const total = split.count === null ? null : split.count - countItems(done, split.count, S);
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
        // DALI rejects an index of zero samples: a shard whose every item failed gets none.
        if (open.members.length) await writeAtomic(join(o.out, name.replace(/\.tar$/, '.idx')), encodeDaliIndex(open.members));
        const record = { ...open.record, nsamples: closed.nsamples, filesize: closed.size, md5sum };
        await writeShardRecord(o.out, name, record);
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
      writer ??= openShard(o.out, split.name, planned.shard, format);
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
  return { processed: progress.done };
}

function openShard(out: string, split: string, shard: number, format: SampleFormat): OpenShard {
  const url = shardName(split, shard);
  const zeros = (): number[] => new Array<number>(format.channels).fill(0);
  return {
    shard,
    tar: new TarWriter(join(out, url), { mtime: format.mtime, md5: false }),
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

function countItems(done: Set<number>, count: number, S: number): number {
  let n = 0;
  for (const k of done) n += Math.min(S, count - k * S);
  return n;
}

async function writeSplitIndex(
  source: Source,
  split: SplitPlan,
  shards: [string, ShardRecord][],
  format: SampleFormat,
  o: ShardJobOptions,
  fingerprint: string,
): Promise<SplitSummary> {
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
  const classes = source.classes.length > maxLabel ? source.classes : Array.from({ length: maxLabel + 1 }, (_, i) => source.classes[i] ?? String(i));
  const samples = shards.reduce((a, [, r]) => a + r.nsamples, 0);
  const skipped = shards.reduce((a, [, r]) => a + r.errors.length, 0);
  const index: WidsIndex = {
    __kind__: WIDS_KIND,
    wids_version: 1,
    name: split.name,
    shardlist: shards.map(([, r]) => ({ url: r.url, nsamples: r.nsamples, filesize: r.filesize, md5sum: r.md5sum })),
    split: split.name,
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
    source: source.description,
    seed: o.seed,
    created_by: { tool: 'scaling-mlps-ts shard', command: o.command },
    job: fingerprint,
  };
  const file = indexFileName(split.name, o.split);
  await writeWidsIndex(join(o.out, file), index);
  return { split: split.name, index: join(o.out, file), shards: shards.length, samples, skipped, bytes: shards.reduce((a, [, r]) => a + r.filesize, 0) };
}

function round4(x: number): number {
  return Math.round(x * 10000) / 10000;
}
