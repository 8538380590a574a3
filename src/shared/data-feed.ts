// The contract between pipeline and trainer: the trainer's only view of data is batches of
// images in C,H,W order with int32 labels, borrowed from the producer (the shared-memory ring, or
// memory in tests and benchmarks) until release(). Images are normalised float32, or uint8 pixels
// with the statistics to normalise them with on the device (src/train/normalize-batch.ts turns
// either into the model's input). It lives here, in neither layer, so that the pipeline
// implements it without importing the trainer.

/** How images travel in a batch: normalised float32, or uint8 pixels with the statistics to apply. */
export type FrameDtype = 'float32' | 'uint8';

export interface Batch {
  epoch: number;
  step: number;
  /** Rows in this batch (eval's last batch may be short). */
  n: number;
  channels: number;
  height: number;
  width: number;
  /**
   * n * channels * height * width values, sample-major, each sample C,H,W. May be a view of shared
   * memory. Float32Array: normalised; Uint8Array: pixels 0..255, with `pixelStats`.
   */
  images: Float32Array | Uint8Array;
  /** Present exactly when images are uint8: (pixel - mean[c]) / std[c], 0..255 units. */
  pixelStats?: { mean: readonly number[]; std: readonly number[] };
  /** n labels. */
  labels: Int32Array;
  /** Hands the memory back; `images` and `labels` must not be read afterwards. */
  release(): void;
}

/** The per-channel statistics a feed normalises with (0-255 units), and where they came from. */
export interface FeedNormalization {
  mean: number[];
  std: number[];
  source: 'dataset' | 'imagenet' | 'explicit' | 'none';
}

export interface DatasetInfo {
  numSamples: number;
  numClasses: number;
  classes: string[];
  channels: number;
  /** Images arrive as res x res. */
  res: number;
  /** What the feed's images are normalised with (absent for feeds of ready-made values). */
  normalization?: FeedNormalization;
}

/** A sample that could not be decoded and was replaced by another, so the batch kept its shape. */
export interface ReplacedSample {
  shard: string;
  key: string;
  reason: string;
}

export interface ReplacedSamples {
  /** Since the feed was opened. */
  count: number;
  /** The first of them (a bounded list). */
  samples: readonly ReplacedSample[];
}

export interface DataFeed {
  readonly info: DatasetInfo;
  /** Samples replaced so far because they could not be decoded (feeds that cannot fail omit it). */
  replaced?(): ReplacedSamples;
  /** Batches in one epoch (train: full batches only; eval: the last may be short). */
  stepsPerEpoch(): number;
  /** The batches of `epoch` from `startStep` on, in order; exactly what an uninterrupted run yields. */
  epoch(epoch: number, startStep?: number): AsyncIterable<Batch>;
  /**
   * A hint that epoch(epoch, startStep) comes next: a feed that produces ahead may start now.
   * The trainer gives it as soon as it knows where it starts, before it builds its model.
   */
  prefetch?(epoch: number, startStep: number): void;
  close(): Promise<void>;
}
