// What the loader's main thread asks a worker to do: fill rows [rowStart, rowStart + n) of the
// batch frame at `frameOffset` in the ring's shared memory. Plain data: the samples, the epoch
// (augmentation parameters derive from it), and where the sections are.
import type { FrameDtype } from '../ring/frame.ts';
import type { AugmentSettings } from '../augment/settings.ts';
import type { SampleTableBuffers } from './sample-table.ts';

export interface LoaderFormat {
  res: number;
  channels: 1 | 3;
  mode: 'train' | 'eval';
  augment: AugmentSettings;
  /** Eval crop: the centred square of this fraction of the shorter side. */
  evalCropFraction: number;
  seed: number;
  /** Per channel, in 0..255 units. */
  mean: number[];
  std: number[];
  /** float32: normalised values; uint8: rounded pixels, normalised by the consumer. */
  dtype: FrameDtype;
}

export interface LoaderWorkerData {
  table: SampleTableBuffers;
  ring: SharedArrayBuffer;
  ringControl: SharedArrayBuffer;
  /** Per ring slot: tasks still filling it. The worker that brings it to 0 publishes the slot. */
  remaining: SharedArrayBuffer;
  format: LoaderFormat;
  /** The shards, whole, in the table's shard order (LoaderOptions.inMemory): reads become views. */
  shardMemory?: SharedArrayBuffer[];
  /** Tests only: the first task whose rowStart equals `row` kills its thread once. */
  crashOnce?: { flag: SharedArrayBuffer; row: number };
}

export interface LoadTask {
  epoch: number;
  slotIndex: number;
  /** The batch's ring sequence: a re-run task whose slot has moved on does nothing. */
  seq: number;
  /** Published as the slot's frame length by whichever task finishes the slot. */
  frameLength: number;
  /** Byte offset of the frame in the ring buffer, and of its sections relative to it. */
  frameOffset: number;
  labelsOffset: number;
  imagesOffset: number;
  rowStart: number;
  indices: Uint32Array;
}

export interface CorruptSample {
  index: number;
  shard: string;
  key: string;
  reason: string;
  replacement: number;
}

export interface LoadTaskResult {
  corrupt: CorruptSample[];
  /** The task could not fill its rows (too many bad samples in a row); its slot is not published. */
  failure?: string;
}
