// The contract between pipeline and trainer: the trainer's only view of data is batches of
// normalised float32 images in C,H,W order with int32 labels, borrowed from the producer (the
// shared-memory ring, or memory in tests and benchmarks) until release(). It lives here, in
// neither layer, so that the pipeline implements it without importing the trainer.

export interface Batch {
  epoch: number;
  step: number;
  /** Rows in this batch (eval's last batch may be short). */
  n: number;
  channels: number;
  height: number;
  width: number;
  /** n * channels * height * width values, sample-major, each sample C,H,W. May be a view of shared memory. */
  images: Float32Array;
  /** n labels. */
  labels: Int32Array;
  /** Hands the memory back; `images` and `labels` must not be read afterwards. */
  release(): void;
}

export interface DatasetInfo {
  numSamples: number;
  numClasses: number;
  classes: string[];
  channels: number;
  /** Images arrive as res x res. */
  res: number;
}

export interface DataFeed {
  readonly info: DatasetInfo;
  /** Batches in one epoch (train: full batches only; eval: the last may be short). */
  stepsPerEpoch(): number;
  /** The batches of `epoch` from `startStep` on, in order; exactly what an uninterrupted run yields. */
  epoch(epoch: number, startStep?: number): AsyncIterable<Batch>;
  close(): Promise<void>;
}
