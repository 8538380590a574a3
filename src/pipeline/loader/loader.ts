// The loader: plans batches, has piscina threads fill them in place in a shared-memory ring of
// msgpack frames, and hands the trainer zero-copy views in order. The main thread only writes
// frame headers and dispatches tasks; it never touches pixels.
import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import type { Batch, DataFeed, DatasetInfo, FeedNormalization, ReplacedSamples } from '../../shared/data-feed.ts';
import { maxFrameBytes, writeFrameHeader, type FrameDtype, type FrameLayout } from '../ring/frame.ts';
import { Ring, RingClosedError, RingSlotError, type RingWriteSlot } from '../ring/ring.ts';
import { checkAugment, PRETRAIN_AUGMENT, type AugmentSettings } from '../augment/settings.ts';
import { openDataset, type OpenedDataset } from './dataset.ts';
import { describeCacheStats } from './shard-cache.ts';
import { loadShardsIntoMemory, type ShardMemory, type ShardMemoryOptions } from './shard-memory.ts';
import type { CorruptSample, LoadTask, LoadTaskResult, LoaderFormat, LoaderWorkerData } from './load-task.ts';
import { batchIndices, batchRows, checkPlan, stepsPerEpoch, type PlanConfig, type PlanMode } from './plan.ts';

export type Normalize = 'dataset' | 'imagenet' | 'none';

export interface LoaderOptions {
  /** index.json, a folder holding one, or shard paths/URLs with brace patterns. */
  data: string;
  /** Check every shard's md5 against the index at open (sizes are always checked). */
  verify?: boolean;
  batchSize: number;
  mode: PlanMode;
  seed?: number;
  rank?: number;
  world?: number;
  workers?: number;
  /** Ring slots (default 3: one consumed, one ready, one filling). */
  slots?: number;
  /**
   * Rows per worker task. Default: the batch split evenly over the workers (at least 256 rows:
   * piscina costs ~50 us a task), so every task of a batch starts when the batch is dispatched.
   * A task queued behind another waits for the main thread to see that one finish, and a
   * synchronous trainer step keeps the main thread busy: with 256-row tasks the loader advanced
   * one task per training step (bench e2e on BLAS: 3% stall after the first step; 0.6% now).
   */
  taskRows?: number;
  /** Output resolution (default: the dataset's; smaller stored images are upscaled). */
  res?: number;
  /** Train transform settings (default: pre-training's); AugmentSettingsError when unusable. */
  augment?: AugmentSettings;
  /** Train order without augmentation (centre crop, no flip): the trainer's --no-augment. */
  noAugment?: boolean;
  /**
   * Per-sample transform, independent of the order: defaults to `mode`. Eval order with
   * 'train' transforms gives test-time augmentation: epoch v is view v of every image.
   */
  transform?: 'train' | 'eval';
  evalCropFraction?: number;
  /** The dataset's own statistics (default), ImageNet's, none, or explicit values (a model's). */
  normalize?: Normalize | { mean: number[]; std: number[] };
  /**
   * float32 (default): workers write normalised values. uint8: workers write rounded pixels (4x
   * fewer bytes) and each frame carries the mean/std the consumer applies (normalize-batch.ts).
   */
  frameDtype?: FrameDtype;
  cacheDir?: string;
  /**
   * Hold every shard in shared memory (loaded at open): workers read samples as views instead of
   * positioned reads. Costs the shards' size in RAM; ShardMemoryError when it is not available.
   * Another loader's `heldShards` (same dataset) shares its copy instead of loading one.
   */
  inMemory?: boolean | ShardMemoryOptions | ShardMemory;
  /** Called for every replaced corrupt sample. */
  onCorrupt?: (c: CorruptSample) => void;
  /** No speculative production beyond this epoch (the trainer's last). */
  lastEpoch?: number;
  /** Tests only: kill the worker thread running the first task that starts at this row, once. */
  crashOnceAtRow?: number;
}

export interface LoaderBatch extends Batch {
  seq: number;
  keys: string[];
  /** The whole msgpack frame, in place (valid until release). */
  frame: Uint8Array;
}

interface Run {
  epoch: number;
  start: number;
  cancelled: boolean;
  /** Sequences acquired (and being filled) / handed to the consumer or drained. */
  produced: number;
  consumed: number;
  settled: boolean;
  producer: Promise<void>;
  /** Taken by an epoch() call (a prefetched run waits unclaimed in `ahead`). */
  claimed: boolean;
  /** The next epoch's run was started after this one (at most once). */
  chained: boolean;
}

export class LoaderError extends Error {
  override name = 'LoaderError';
}

async function shardMemoryFor(dataset: OpenedDataset, how: LoaderOptions['inMemory'], ringBytes: number): Promise<ShardMemory | undefined> {
  if (!how) return undefined;
  const paths = dataset.table.shardPaths;
  if (how === true || !('buffers' in how)) return loadShardsIntoMemory(paths, { reserve: ringBytes, ...(how === true ? {} : how) });
  const sizes = paths.map((p) => statSync(p).size);
  if (how.paths.length !== paths.length || how.paths.some((p, s) => p !== paths[s] || how.buffers[s]!.byteLength !== sizes[s])) {
    throw new LoaderError(
      `the shards held in memory (${how.paths.length}, from ${how.paths[0]}) are not this dataset's (${paths.length}, from ${paths[0]}), or changed since`,
    );
  }
  return how;
}

const IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255];
const IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255];
const TASK_RETRIES = 3;

function normalisationStats(d: OpenedDataset, how: Normalize | { mean: number[]; std: number[] }): FeedNormalization {
  const c = d.channels;
  if (typeof how === 'object') {
    if (how.mean.length !== c || how.std.length !== c || how.std.some((s) => !(s > 0))) {
      throw new LoaderError(
        `normalisation for ${c} channels needs ${c} means and ${c} positive stds, got mean ${JSON.stringify(how.mean)}, std ${JSON.stringify(how.std)}`,
      );
    }
    return { mean: [...how.mean], std: [...how.std], source: 'explicit' };
  }
  if (how === 'none') return { mean: new Array(c).fill(0), std: new Array(c).fill(255), source: 'none' };
  if (how === 'imagenet' && c === 3) return { mean: IMAGENET_MEAN, std: IMAGENET_STD, source: 'imagenet' };
  if (d.mean && d.std && d.mean.length === c && d.std.every((s) => s > 0)) return { mean: d.mean, std: d.std, source: 'dataset' };
  return c === 3 ? { mean: IMAGENET_MEAN, std: IMAGENET_STD, source: 'imagenet' } : { mean: [127.5], std: [127.5], source: 'explicit' };
}

interface LoaderShape {
  plan: PlanConfig;
  format: LoaderFormat;
  info: DatasetInfo;
  slots: number;
  slotBytes: number;
}

/** The plan, the frame format and the ring's size from the options: every check but the data's. */
function loaderShape(dataset: OpenedDataset, o: LoaderOptions): LoaderShape {
  const table = dataset.table;
  const plan: PlanConfig = { numSamples: table.count, batchSize: o.batchSize, seed: o.seed ?? 0, rank: o.rank ?? 0, world: o.world ?? 1, mode: o.mode };
  checkPlan(plan);
  const res = o.res ?? dataset.resolution ?? 64;
  const stats = normalisationStats(dataset, o.normalize ?? 'dataset');
  const format: LoaderFormat = {
    res,
    channels: dataset.channels,
    mode: o.noAugment ? 'eval' : (o.transform ?? o.mode),
    augment: checkAugment(o.augment ?? PRETRAIN_AUGMENT),
    evalCropFraction: o.evalCropFraction ?? 1,
    seed: plan.seed,
    mean: stats.mean,
    std: stats.std,
    dtype: o.frameDtype ?? 'float32',
  };
  const info: DatasetInfo = {
    numSamples: table.count,
    numClasses: dataset.numClasses,
    classes: dataset.classes,
    channels: dataset.channels,
    res,
    normalization: stats,
  };
  const slotBytes = maxFrameBytes({
    n: o.batchSize,
    channels: dataset.channels,
    height: res,
    width: res,
    maxKeyBytes: table.maxKeyBytes(),
    dtype: format.dtype,
  });
  return { plan, format, info, slots: o.slots ?? 3, slotBytes };
}

export class Loader implements DataFeed {
  readonly info: DatasetInfo;
  readonly plan: PlanConfig;
  readonly ring: Ring;
  readonly slotBytes: number;
  readonly format: LoaderFormat;
  readonly corrupt: CorruptSample[] = [];
  corruptCount = 0;

  replaced(): ReplacedSamples {
    return { count: this.corruptCount, samples: this.corrupt };
  }
  private readonly pool: Piscina;
  private readonly remaining: Int32Array;
  /** Slot fills under way (header written, tasks dispatched); close() lets them finish. */
  private readonly filling = new Set<Promise<void>>();
  private nextSeq = 0;
  private closed = false;
  private failure: Error | null = null;
  private ahead: Run | null = null;
  private latest: Run | null = null;
  /** What the producer wrote into each in-flight frame, so the consumer never re-parses it. */
  private readonly taskRows: number;
  /** The shards are another loader's (LoaderOptions.inMemory was a ShardMemory). */
  private readonly sharedShards: boolean;
  private readonly written = new Map<number, { epoch: number; step: number; n: number; keys: string[]; layout: FrameLayout }>();

  private constructor(
    private readonly dataset: OpenedDataset,
    private readonly o: LoaderOptions,
    shape: LoaderShape,
    private readonly shardMemory: ShardMemory | undefined,
  ) {
    const table = dataset.table;
    this.plan = shape.plan;
    this.format = shape.format;
    this.info = shape.info;
    this.slotBytes = shape.slotBytes;
    this.sharedShards = shardMemory !== undefined && shardMemory === o.inMemory;
    this.ring = Ring.create({ slots: shape.slots, slotBytes: this.slotBytes });
    const workers = o.workers ?? availableParallelism();
    this.taskRows = o.taskRows ?? Math.max(256, Math.ceil(o.batchSize / workers));
    this.remaining = new Int32Array(new SharedArrayBuffer(4 * this.ring.slots));
    const workerData: LoaderWorkerData = {
      table: table.buffers,
      ring: this.ring.buffers.data,
      ringControl: this.ring.buffers.control,
      remaining: this.remaining.buffer as SharedArrayBuffer,
      format: this.format,
      ...(shardMemory ? { shardMemory: shardMemory.buffers } : {}),
      ...(o.crashOnceAtRow !== undefined ? { crashOnce: { flag: new SharedArrayBuffer(4), row: o.crashOnceAtRow } } : {}),
    };
    this.pool = new Piscina({
      filename: new URL('./loader-worker.ts', import.meta.url).href,
      minThreads: workers,
      maxThreads: workers,
      idleTimeout: Infinity,
      workerData,
    });
  }

  static async open(o: LoaderOptions): Promise<Loader> {
    const dataset = await openDataset(o.data, { ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}), verify: o.verify ?? false });
    try {
      // Every option checked (and the ring sized) before a possibly long load of the shards.
      const shape = loaderShape(dataset, o);
      const memory = await shardMemoryFor(dataset, o.inMemory, shape.slots * shape.slotBytes);
      return new Loader(dataset, o, shape, memory);
    } catch (e) {
      dataset.release();
      throw e;
    }
  }

  /** The shards this loader holds in memory, for another loader of the same data to share. */
  get heldShards(): ShardMemory | undefined {
    return this.shardMemory;
  }

  /** Shared memory held: ring slots + control words, the sample table, shards held in memory. */
  get memory(): { ringBytes: number; tableBytes: number; shardBytes: number; slots: number; slotBytes: number } {
    return {
      ringBytes: this.ring.bytes,
      tableBytes: this.dataset.table.bytes,
      // Counted by the loader that loaded them.
      shardBytes: this.sharedShards ? 0 : (this.shardMemory?.bytes ?? 0),
      slots: this.ring.slots,
      slotBytes: this.slotBytes,
    };
  }

  describe(): string {
    const m = this.memory;
    return (
      `loader: ${this.info.numSamples} samples, ${this.plan.mode} batches of ${this.plan.batchSize} at ${this.format.channels}x${this.format.res}x${this.format.res} ${this.format.dtype}, ` +
      `${this.pool.options.maxThreads} workers; shared memory ${m.slots} slots x ${(m.slotBytes / 2 ** 20).toFixed(1)} MiB = ${(m.ringBytes / 2 ** 20).toFixed(1)} MiB ring + ${(m.tableBytes / 2 ** 20).toFixed(1)} MiB sample table` +
      (this.shardMemory
        ? ` + ${(this.shardMemory.bytes / 2 ** 20).toFixed(1)} MiB shards in memory (${this.sharedShards ? 'shared with another loader' : `loaded in ${this.shardMemory.seconds.toFixed(1)} s`})`
        : '') +
      (this.dataset.cache ? `; ${describeCacheStats(this.dataset.cache)}` : '')
    );
  }

  stepsPerEpoch(): number {
    return stepsPerEpoch(this.plan);
  }

  /**
   * Starts producing `epoch` from `startStep` before epoch() asks for it (the trainer calls this
   * before building its model, so the first batches are made meanwhile). Nothing happens once
   * production has started; an epoch() call for anything else drops what this produced.
   */
  prefetch(epoch: number, startStep = 0): void {
    this.checkStart(startStep);
    if (this.closed || this.latest !== null) return;
    this.ahead = this.startRun(epoch, startStep, false);
  }

  private checkStart(startStep: number): void {
    const steps = this.stepsPerEpoch();
    if (!Number.isInteger(startStep) || startStep < 0 || startStep > steps)
      throw new LoaderError(`start step ${startStep} out of range: epoch has ${steps} steps`);
  }

  async *epoch(epoch: number, startStep = 0): AsyncGenerator<LoaderBatch> {
    if (this.closed) throw new LoaderError('loader is closed');
    this.checkStart(startStep);
    const steps = this.stepsPerEpoch();
    const ahead = this.ahead;
    this.ahead = null;
    let run: Run;
    if (ahead && ahead.epoch === epoch && ahead.start === startStep) {
      run = ahead;
      run.claimed = true;
      // A prefetched run that finished producing before it was claimed chains the next now.
      if (run.settled) this.chainNext(run);
    } else {
      if (ahead) await this.drain(ahead);
      run = this.startRun(epoch, startStep, true);
    }
    try {
      for (let step = startStep; step < steps; step++) {
        const view = await this.ring.next().catch((err: unknown) => {
          // A failed slot was taken (and released) by the ring: it is consumed, or drain() below
          // would wait forever for a frame that never comes.
          if (err instanceof RingSlotError) run.consumed++;
          throw err instanceof RingSlotError && this.failure ? this.failure : err;
        });
        run.consumed++;
        yield this.batchOf(view.bytes, view.seq, () => view.release());
      }
      await run.producer;
    } finally {
      await this.drain(run);
    }
  }

  /**
   * Starts producing `epoch` from `start`. When a train run has dispatched its last batch, the
   * next epoch's run starts at once (the trainer asks for it next), so no epoch begins with an
   * empty ring; if something else is asked for, that speculative run is drained and dropped.
   */
  private startRun(epoch: number, start: number, claimed: boolean): Run {
    const run: Run = { epoch, start, cancelled: false, produced: 0, consumed: 0, settled: false, producer: Promise.resolve(), claimed, chained: false };
    this.latest = run;
    run.producer = this.produce(epoch, start, this.stepsPerEpoch(), run).finally(() => {
      run.settled = true;
    });
    run.producer.then(
      // Unclaimed (prefetched, still in `ahead`), it chains when epoch() claims it.
      () => run.claimed && this.chainNext(run),
      () => undefined,
    );
    return run;
  }

  /** Starts the next epoch's run after a claimed train run has dispatched its last batch. */
  private chainNext(run: Run): void {
    const next = run.epoch + 1;
    if (
      run.chained ||
      run.cancelled ||
      this.closed ||
      this.latest !== run ||
      this.plan.mode !== 'train' ||
      (this.o.lastEpoch !== undefined && next > this.o.lastEpoch)
    ) {
      return;
    }
    run.chained = true;
    this.ahead = this.startRun(next, 0, false);
  }

  /** Stops a run and consumes what it already produced, so the ring's next sequence is clean. */
  private async drain(run: Run): Promise<void> {
    run.cancelled = true;
    while (!this.closed && (!run.settled || run.consumed < run.produced)) {
      if (run.consumed < run.produced) {
        const v = await this.ring.next().catch(() => null);
        v?.release();
        run.consumed++;
      } else {
        await run.producer.catch(() => undefined);
      }
    }
  }

  private batchOf(bytes: Uint8Array, seq: number, release: () => void): LoaderBatch {
    const w = this.written.get(seq);
    if (!w) throw new LoaderError(`no record of frame ${seq}`);
    this.written.delete(seq);
    const { res, channels, dtype, mean, std } = this.format;
    const values = w.n * channels * res * res;
    const at = bytes.byteOffset + w.layout.imagesOffset;
    return {
      seq,
      epoch: w.epoch,
      step: w.step,
      n: w.n,
      channels,
      height: res,
      width: res,
      ...(dtype === 'uint8'
        ? { images: new Uint8Array(bytes.buffer, at, values), pixelStats: { mean, std } }
        : { images: new Float32Array(bytes.buffer, at, values) }),
      labels: new Int32Array(bytes.buffer, bytes.byteOffset + w.layout.labelsOffset, w.n),
      keys: w.keys,
      frame: bytes.subarray(0, w.layout.totalBytes),
      release,
    };
  }

  private async produce(epoch: number, start: number, steps: number, run: Run): Promise<void> {
    const pending: Promise<void>[] = [];
    for (let step = start; step < steps && !run.cancelled && !this.closed; step++) {
      let slot: RingWriteSlot;
      const seq = this.nextSeq;
      try {
        slot = await this.ring.acquire(seq);
      } catch (err) {
        if (err instanceof RingClosedError) break;
        throw err;
      }
      this.nextSeq = seq + 1;
      run.produced++;
      const fill = this.fillSlot(slot, epoch, step);
      this.filling.add(fill);
      void fill.finally(() => this.filling.delete(fill));
      pending.push(fill);
    }
    await Promise.all(pending);
  }

  /** Writes the header, has the workers fill the rows, then publishes (or fails) the slot. */
  private async fillSlot(slot: RingWriteSlot, epoch: number, step: number): Promise<void> {
    try {
      const indices = batchIndices(this.plan, epoch, step);
      const n = batchRows(this.plan, step);
      const table = this.dataset.table;
      const keys = new Array<string>(n);
      for (let i = 0; i < n; i++) keys[i] = table.key(indices[i]!);
      const layout = writeFrameHeader(slot.bytes, {
        epoch,
        step,
        rank: this.plan.rank,
        world: this.plan.world,
        n,
        channels: this.format.channels,
        height: this.format.res,
        width: this.format.res,
        keys,
        ...(this.format.dtype === 'uint8' ? { dtype: 'uint8' as const, mean: this.format.mean, std: this.format.std } : {}),
      });
      this.written.set(slot.seq, { epoch, step, n, keys, layout });
      const rowsPerTask = this.taskRows;
      const count = Math.ceil(n / rowsPerTask);
      if (count === 0) {
        slot.publish(layout.totalBytes);
        return;
      }
      Atomics.store(this.remaining, slot.index, count);
      const tasks: Promise<void>[] = [];
      for (let r = 0; r < n; r += rowsPerTask) {
        tasks.push(
          this.runTask({
            epoch,
            slotIndex: slot.index,
            seq: slot.seq,
            frameLength: layout.totalBytes,
            frameOffset: slot.bytes.byteOffset,
            labelsOffset: layout.labelsOffset,
            imagesOffset: layout.imagesOffset,
            rowStart: r,
            indices: indices.subarray(r, Math.min(n, r + rowsPerTask)),
          }),
        );
      }
      // The worker finishing the last task publishes the slot; after that the slot may already
      // be consumed and reused, so it is touched again only if a task failed (then it is
      // still FILLING: a failed task never counts down).
      // Wait for every task even when one fails, so no task outlives its fill (close() relies
      // on that), then report the first failure.
      const failed = (await Promise.allSettled(tasks)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    } catch (err) {
      this.failure ??= err instanceof Error ? err : new Error(String(err));
      if (!this.closed) slot.fail();
    }
  }

  /** Runs a task; a crashed thread's task is simply run again (it writes the same bytes). */
  private async runTask(task: LoadTask): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let result: LoadTaskResult;
      try {
        result = (await this.pool.run(task)) as LoadTaskResult;
      } catch (err) {
        // The task reports data problems in its result, so a rejection is a thread that died.
        if (this.closed) throw new LoaderError('loader closed');
        if (attempt + 1 >= TASK_RETRIES) throw err;
        continue;
      }
      for (const c of result.corrupt) {
        this.corruptCount++;
        if (this.corrupt.length < 1000) this.corrupt.push(c);
        this.o.onCorrupt?.(c);
      }
      if (result.failure) throw new LoaderError(result.failure);
      return;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ahead) this.ahead.cancelled = true;
    if (this.latest) this.latest.cancelled = true;
    // Tasks in flight write into ring memory and publish from their threads: let them finish
    // before the ring and the threads go away. A producer waiting for a slot is woken by the
    // ring's close and stops.
    // (A producer whose slot arrived just before close may start one more fill: loop.)
    while (this.filling.size) await Promise.allSettled([...this.filling]);
    this.ring.close();
    await this.pool.destroy();
    this.dataset.release();
  }
}
