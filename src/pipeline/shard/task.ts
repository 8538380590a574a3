// What crosses between the shard job and its worker threads: plain data plus one payload
// buffer each way, transferred rather than copied.
import type { MemberLocation } from '../webdataset/tar-writer.ts';
import type { ResizeMode } from '../image/resize.ts';
import type { Item, PixelBatch, SyntheticParams } from '../sources/types.ts';

export type Encoding = 'raw' | 'jpeg';

export interface SampleFormat {
  res: number;
  resize: ResizeMode;
  encoding: Encoding;
  quality: number;
  channels: 1 | 3;
  /** tar mtime of every member (fixed, so shards are reproducible). */
  mtime: number;
  synthetic?: SyntheticParams;
}

export interface ShardTask {
  format: SampleFormat;
  /** Sequence number of items[0] in its split; item k gets key `keyOf(firstSeq + k)`. */
  firstSeq: number;
  items: Item[];
  /** Instead of `items`: in-memory images of one size (see PixelBatch). */
  pixels?: PixelBatch;
  payload?: Uint8Array;
}

export function taskSize(t: ShardTask): number {
  return t.pixels ? t.pixels.count : t.items.length;
}

export interface EncodedSample {
  key: string;
  label: number;
  /** Offsets relative to the start of the task's `bytes`. */
  members: MemberLocation[];
}

export interface ShardTaskResult {
  /** The task's samples as consecutive tar records, ready to append to a shard. */
  bytes: Uint8Array;
  samples: EncodedSample[];
  errors: { file: string; reason: string }[];
  /** Per-channel sums of stored pixel values and their squares, for the index's mean/std. */
  sum: number[];
  sumSq: number[];
  pixels: number;
}

/** Zero-padded so keys sort in sample order and stay free of dots. */
export function keyOf(seq: number): string {
  return String(seq).padStart(9, '0');
}
