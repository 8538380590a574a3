// A DataFeed over arrays already in memory: for tests, benchmarks and development. Batches are
// deterministic functions of (seed, epoch, step), so epoch(e, k) yields exactly what an
// uninterrupted pass would from step k on - the property resume relies on.
import type { Batch, DataFeed, DatasetInfo } from '../shared/data-feed.ts';
import { Rng } from '../shared/random.ts';

export interface MemoryFeedOptions {
  /**
   * numSamples * channels * res * res values, sample-major, each sample C,H,W: normalised float32,
   * or uint8 pixels with `pixelStats` (as uint8 frames deliver them).
   */
  images: Float32Array | Uint8Array;
  pixelStats?: { mean: readonly number[]; std: readonly number[] };
  labels: Int32Array;
  channels: number;
  res: number;
  numClasses: number;
  batchSize: number;
  /** Reorder samples each epoch with a permutation seeded by (seed, epoch). Default false. */
  shuffle?: boolean;
  seed?: number;
  /** Drop the last partial batch (training); default true when shuffling, false otherwise. */
  dropLast?: boolean;
  classes?: string[];
}

export class MemoryFeed implements DataFeed {
  readonly info: DatasetInfo;
  private readonly sampleSize: number;
  private readonly dropLast: boolean;
  private closed = false;

  constructor(private readonly o: MemoryFeedOptions) {
    const n = o.labels.length;
    this.sampleSize = o.channels * o.res * o.res;
    if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new RangeError(`MemoryFeed: batchSize must be a positive integer, got ${o.batchSize}`);
    if (o.images.length !== n * this.sampleSize) {
      throw new RangeError(`MemoryFeed: ${o.images.length} image values for ${n} labels of ${this.sampleSize} values each`);
    }
    if (o.images instanceof Uint8Array !== (o.pixelStats !== undefined)) {
      throw new RangeError('MemoryFeed: uint8 images need pixelStats, and only they take them');
    }
    for (let i = 0; i < n; i++) {
      const y = o.labels[i]!;
      if (y < 0 || y >= o.numClasses) throw new RangeError(`MemoryFeed: label ${y} of sample ${i} is outside [0, ${o.numClasses})`);
    }
    this.dropLast = o.dropLast ?? Boolean(o.shuffle);
    this.info = {
      numSamples: n,
      numClasses: o.numClasses,
      classes: o.classes ?? Array.from({ length: o.numClasses }, (_, i) => String(i)),
      channels: o.channels,
      res: o.res,
    };
  }

  get batchSize(): number {
    return this.o.batchSize;
  }

  stepsPerEpoch(): number {
    const n = this.info.numSamples;
    return this.dropLast ? Math.floor(n / this.o.batchSize) : Math.ceil(n / this.o.batchSize);
  }

  private order(epoch: number): Int32Array | null {
    return this.o.shuffle ? new Rng(this.o.seed ?? 0, epoch).permutation(this.info.numSamples) : null;
  }

  private batch(epoch: number, step: number, order: Int32Array | null): Batch {
    const { images, labels, batchSize } = this.o;
    const start = step * batchSize;
    const n = Math.min(batchSize, this.info.numSamples - start);
    const d = this.sampleSize;
    let img: Float32Array | Uint8Array;
    let lab: Int32Array;
    if (order === null) {
      // In order: views, no copy (what a ring slot would hand out).
      img = images.subarray(start * d, (start + n) * d);
      lab = labels.subarray(start, start + n);
    } else {
      img = images instanceof Uint8Array ? new Uint8Array(n * d) : new Float32Array(n * d);
      lab = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const src = order[start + i]!;
        img.set(images.subarray(src * d, (src + 1) * d), i * d);
        lab[i] = labels[src]!;
      }
    }
    const stats = this.o.pixelStats;
    return {
      epoch,
      step,
      n,
      channels: this.o.channels,
      height: this.o.res,
      width: this.o.res,
      images: img,
      labels: lab,
      ...(stats ? { pixelStats: stats } : {}),
      release: () => {},
    };
  }

  epoch(epoch: number, startStep = 0): AsyncIterable<Batch> {
    if (this.closed) throw new Error('MemoryFeed: epoch() after close()');
    if (!Number.isInteger(startStep) || startStep < 0) throw new RangeError(`MemoryFeed: bad startStep ${startStep}`);
    const steps = this.stepsPerEpoch();
    const order = this.order(epoch);
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        for (let s = startStep; s < steps; s++) yield self.batch(epoch, s, order);
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/**
 * Random images with learnable labels: each class has a fixed random prototype (drawn from
 * `taskSeed`, so train and validation sets made with different `seed`s share the task) and each
 * sample is half its prototype plus standard normal noise.
 */
export function syntheticArrays(
  numSamples: number,
  channels: number,
  res: number,
  numClasses: number,
  seed = 0,
  taskSeed = 0,
): { images: Float32Array; labels: Int32Array } {
  const d = channels * res * res;
  const protoRng = new Rng(taskSeed, 0x7a5c);
  const protos = new Float32Array(numClasses * d);
  for (let i = 0; i < protos.length; i++) protos[i] = protoRng.normal();
  const rng = new Rng(seed, 0x5eed);
  const images = new Float32Array(numSamples * d);
  const labels = new Int32Array(numSamples);
  for (let s = 0; s < numSamples; s++) {
    const y = rng.below(numClasses);
    labels[s] = y;
    for (let j = 0; j < d; j++) images[s * d + j] = 0.5 * protos[y * d + j]! + rng.normal();
  }
  return { images, labels };
}
