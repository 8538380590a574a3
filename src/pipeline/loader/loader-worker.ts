// Loader worker thread: reads samples by offset, decodes, augments and writes them in place into
// a batch frame in shared memory. The task result carries only the list of replaced samples.
import { closeSync, openSync, readSync } from 'node:fs';
import { workerData } from 'node:worker_threads';
import { decodeImage, decodeJpegSync } from '../image/decode.ts';
import type { RawImage } from '../image/types.ts';
import { hash32 } from '../../shared/random.ts';
import { centerCrop } from '../augment/center-crop.ts';
import { createResampler } from '../augment/create-resampler.ts';
import { normalisation } from '../augment/normalisation.ts';
import { randomResizedCrop } from '../augment/random-resized-crop.ts';
import type { ResampleTarget } from '../augment/resample.ts';
import type { CorruptSample, LoadTask, LoadTaskResult, LoaderWorkerData } from './load-task.ts';
import { SampleTable } from './sample-table.ts';
import { checkSampleMembers, readRangeError, ShardIndexError } from './member-check.ts';
import { BLOCK } from '../webdataset/tar-header.ts';
import { parseNpyImage } from '../image/npy-image.ts';
import { Ring } from '../ring/ring.ts';

const data = workerData as LoaderWorkerData;
// Publishing from here, not from the main thread: a trainer whose step blocks the event loop
// (synchronous wasm) would otherwise see each batch only on its next event-loop turn.
const ring = Ring.attach({ data: data.ring, control: data.ringControl });
const remaining = new Int32Array(data.remaining);
const table = new SampleTable(data.table);
const format = data.format;
// uint8 frames hold pixels: their consumer normalises.
const norm = format.dtype === 'uint8' ? undefined : normalisation(format.mean, format.std);
// WebAssembly SIMD kernel (bench/augment.ts); TypeScript where wasm is unavailable. Same bits.
const resampler = createResampler(format.res, format.channels);
const chw = format.channels * format.res * format.res;
const shardMemory = data.shardMemory?.map((b) => new Uint8Array(b));
const fds = new Map<number, number>();
let readBuf = Buffer.allocUnsafe(1 << 16);
const MAX_REPLACEMENTS = 16;

function fdOf(shard: number): number {
  let fd = fds.get(shard);
  if (fd === undefined) {
    fd = openSync(table.shardPaths[shard]!, 'r');
    fds.set(shard, fd);
  }
  return fd;
}

/**
 * Label and image (adjacent members of the sample) with the tar header before each, checked
 * against the index at the sample's first read (a mismatch: ShardIndexError, fatal): views of the
 * shard where it is held in memory, else one positioned read covering them all.
 */
function readSample(i: number): { label: Uint8Array; image: Uint8Array } {
  const lo = table.labelOffset[i]!;
  const ls = table.labelSize[i]!;
  const io = table.imageOffset[i]!;
  const is = table.imageSize[i]!;
  const first = Math.min(lo, io);
  const start = first - BLOCK;
  const end = Math.max(lo + ls, io + is);
  const span = end - start;
  if (start < 0) throw readRangeError(table, i, 'no room for a tar header before it');
  // Before either way of reading, so that both replace the same samples.
  if (span > 1 << 26) throw new Error(`sample spans ${span} bytes: label and image members are far apart`);
  const whole = shardMemory?.[table.shard[i]!];
  if (whole !== undefined) {
    if (end > whole.length) throw readRangeError(table, i, `the shard ends first (${whole.length} bytes, the sample ends at ${end})`);
    checkSampleMembers(table, i, whole, 0);
    return { label: whole.subarray(lo, lo + ls), image: whole.subarray(io, io + is) };
  }
  if (readBuf.length < span) readBuf = Buffer.allocUnsafe(span * 2);
  const n = readSync(fdOf(table.shard[i]!), readBuf, 0, span, start);
  if (n !== span) throw readRangeError(table, i, `the shard ends first (read ${n} of ${span} bytes from offset ${start})`);
  checkSampleMembers(table, i, readBuf, start);
  return { label: readBuf.subarray(lo - start, lo - start + ls), image: readBuf.subarray(io - start, io - start + is) };
}

function parseLabel(b: Uint8Array): number {
  let v = 0;
  let digits = 0;
  for (let k = 0; k < b.length; k++) {
    const c = b[k]!;
    if (c >= 48 && c <= 57) {
      v = v * 10 + (c - 48);
      digits++;
    } else if (c !== 32 && c !== 10 && c !== 13 && c !== 9)
      throw new Error(`label is not a decimal integer: ${JSON.stringify(Buffer.from(b).toString('latin1'))}`);
  }
  if (digits === 0) throw new Error('empty label');
  return v;
}

let decodeOut = new Uint8Array(1 << 16);

async function decode(i: number, bytes: Uint8Array): Promise<RawImage> {
  const kind = table.imageKind[i]!;
  if (kind === 0) return parseNpyImage(bytes);
  if (kind === 1 || kind === 2) {
    const fast = decodeJpegSync(bytes, format.channels, undefined, decodeOut);
    if (fast) {
      // Too small this time (the decoder allocated its own): large enough from the next image on.
      if (fast.data.length > decodeOut.length) decodeOut = new Uint8Array(fast.data.length);
      return fast;
    }
  }
  return decodeImage(bytes, { channels: format.channels, file: table.key(i) });
}

async function fill(i: number, epoch: number, images: ResampleTarget, labels: Int32Array, row: number): Promise<void> {
  const { label, image } = readSample(i);
  const lab = parseLabel(label);
  const img = await decode(i, image);
  if (img.channels !== format.channels) throw new Error(`image has ${img.channels} channels, the dataset ${format.channels}`);
  const box =
    format.mode === 'train'
      ? randomResizedCrop(format.seed, epoch, i, img.width, img.height, format.augment)
      : centerCrop(img.width, img.height, format.evalCropFraction);
  resampler.run(img.data, img.width, img.height, box, images, row * chw, norm);
  labels[row] = lab;
}

export default async function loadTask(task: LoadTask): Promise<LoadTaskResult> {
  if (data.crashOnce && task.rowStart === data.crashOnce.row && Atomics.compareExchange(new Int32Array(data.crashOnce.flag), 0, 0, 1) === 0) {
    process.exit(17);
  }
  // A task re-run after a crash whose slot was meanwhile published (its thread died after
  // counting down) must not write into a slot that may hold a later batch by now.
  if (ring.seqOf(task.slotIndex) !== task.seq || Atomics.load(remaining, task.slotIndex) <= 0) return { corrupt: [] };
  const n = task.indices.length;
  // A uint8 slot is written through a Uint8ClampedArray: the store rounds as the kernel does.
  const images =
    format.dtype === 'uint8'
      ? new Uint8ClampedArray(data.ring, task.frameOffset + task.imagesOffset + task.rowStart * chw, n * chw)
      : new Float32Array(data.ring, task.frameOffset + task.imagesOffset + task.rowStart * chw * 4, n * chw);
  const labels = new Int32Array(data.ring, task.frameOffset + task.labelsOffset + task.rowStart * 4, n);
  const corrupt: CorruptSample[] = [];
  for (let r = 0; r < n; r++) {
    const index = task.indices[r]!;
    let candidate = index;
    for (let attempt = 0; ; attempt++) {
      try {
        await fill(candidate, task.epoch, images, labels, r);
        break;
      } catch (err) {
        // A wrong index is no bad image: every sample of the shard may be mislabelled.
        if (err instanceof ShardIndexError) return { corrupt, failure: err.message };
        // A bad sample is replaced by another chosen from (seed, epoch, index, attempt) alone,
        // so the batch keeps its shape and a rerun replaces it identically.
        const replacement = hash32(format.seed, task.epoch, index, attempt) % table.count;
        corrupt.push({
          index: candidate,
          shard: table.shardPaths[table.shard[candidate]!]!,
          key: table.key(candidate),
          reason: (err as Error).message,
          replacement,
        });
        // A task that cannot fill its rows says so in its result: a rejection of the task means
        // the thread died (the loader re-runs it), never a data problem.
        if (attempt + 1 >= MAX_REPLACEMENTS) {
          return { corrupt, failure: `sample ${index}: ${MAX_REPLACEMENTS} replacements in a row failed; last: ${(err as Error).message}` };
        }
        candidate = replacement;
      }
    }
  }
  if (Atomics.sub(remaining, task.slotIndex, 1) === 1 && !ring.closed) ring.publish(task.slotIndex, task.frameLength);
  return { corrupt };
}

process.on('exit', () => {
  for (const fd of fds.values()) closeSync(fd);
});
