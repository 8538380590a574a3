// Piscina worker: turns a task's items into finished tar records (decode, resize, encode, tar
// headers) so the main thread only appends bytes to files.
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { decodeImage } from '../image/decode.ts';
import { encodeJpeg, toChannels } from '../image/encode.ts';
import { fitImage } from '../image/resize.ts';
import type { RawImage } from '../image/types.ts';
import { syntheticImage } from '../sources/synthetic-image.ts';
import type { Item } from '../sources/types.ts';
import { decodeNpy, encodeCls, encodeNpy } from '../webdataset/codecs.ts';
import { encodeSample } from '../webdataset/tar-writer.ts';
import { keyOf, type SampleFormat, type ShardTask, type ShardTaskResult, type EncodedSample } from './task.ts';

const NPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];

/** Tar members are read many per task from the same few archives: keep their fds open. */
const fds = new Map<string, number>();
function fdOf(path: string): number {
  let fd = fds.get(path);
  if (fd === undefined) {
    if (fds.size > 64) {
      for (const f of fds.values()) closeSync(f);
      fds.clear();
    }
    fd = openSync(path, 'r');
    fds.set(path, fd);
  }
  return fd;
}

function readRange(path: string, offset: number, size: number): Uint8Array {
  const buf = Buffer.allocUnsafe(size);
  const n = readSync(fdOf(path), buf, 0, size, offset);
  if (n !== size) throw new Error(`truncated member: read ${n} of ${size} bytes at offset ${offset}`);
  return buf;
}

function chwToHwc(src: Uint8Array, w: number, h: number, c: number): Uint8Array {
  const out = new Uint8Array(w * h * c);
  const plane = w * h;
  for (let ch = 0; ch < c; ch++) {
    for (let i = 0; i < plane; i++) out[i * c + ch] = src[ch * plane + i]!;
  }
  return out;
}

function fromNpy(bytes: Uint8Array, file: string): RawImage {
  const npy = decodeNpy(bytes, { member: file });
  if (npy.dtype !== '|u1') throw new Error(`npy dtype ${npy.dtype} is not uint8`);
  const [h, w, c = 1] = npy.shape;
  if (npy.shape.length < 2 || npy.shape.length > 3 || (c !== 1 && c !== 3) || !h || !w) {
    throw new Error(`npy shape (${npy.shape.join(', ')}) is not H x W [x 1|3]`);
  }
  return { data: npy.data, width: w, height: h, channels: c };
}

function isNpy(bytes: Uint8Array): boolean {
  return NPY_MAGIC.every((b, i) => bytes[i] === b);
}

async function loadImage(item: Item, task: ShardTask): Promise<RawImage> {
  const { ref } = item;
  const channels = task.format.channels;
  switch (ref.kind) {
    case 'synthetic': {
      const s = task.format.synthetic!;
      return syntheticImage(s.seed, ref.index, s.numClasses, s.width, s.height);
    }
    case 'payload-pixels': {
      const n = ref.width * ref.height * ref.channels;
      const view = task.payload!.subarray(ref.offset, ref.offset + n);
      const data = ref.layout === 'chw' && ref.channels > 1 ? chwToHwc(view, ref.width, ref.height, ref.channels) : view;
      return { data, width: ref.width, height: ref.height, channels: ref.channels };
    }
    case 'payload-encoded': {
      const bytes = task.payload!.subarray(ref.offset, ref.offset + ref.size);
      return isNpy(bytes) ? fromNpy(bytes, item.name) : decodeImage(bytes, { channels, file: item.name });
    }
    case 'file':
      return decodeImage(readFileSync(ref.path), { channels, file: item.name });
    case 'range':
      return decodeImage(readRange(ref.path, ref.offset, ref.size), { channels, file: item.name });
  }
}

function encodePayload(img: RawImage, f: SampleFormat): { ext: string; bytes: Uint8Array } {
  if (f.encoding === 'jpeg') return { ext: 'jpg', bytes: encodeJpeg(img, f.quality) };
  return { ext: 'npy', bytes: encodeNpy(img.data, [img.height, img.width, img.channels]) };
}

function accumulate(img: RawImage, sum: number[], sumSq: number[]): void {
  const c = img.channels;
  const d = img.data;
  for (let ch = 0; ch < c; ch++) {
    let s = 0;
    let s2 = 0;
    for (let i = ch; i < d.length; i += c) {
      const v = d[i]!;
      s += v;
      s2 += v * v;
    }
    sum[ch]! += s;
    sumSq[ch]! += s2;
  }
}

export async function runShardTask(task: ShardTask): Promise<ShardTaskResult> {
  const f = task.format;
  const parts: Uint8Array[] = [];
  const samples: EncodedSample[] = [];
  const errors: { file: string; reason: string }[] = [];
  const sum = new Array<number>(f.channels).fill(0);
  const sumSq = new Array<number>(f.channels).fill(0);
  let pixels = 0;
  let offset = 0;
  for (let k = 0; k < task.items.length; k++) {
    const item = task.items[k]!;
    let encoded;
    try {
      const img = toChannels(fitImage(await loadImage(item, task), f.res, f.resize), f.channels);
      accumulate(img, sum, sumSq);
      pixels += img.width * img.height;
      const payload = encodePayload(img, f);
      encoded = encodeSample({
        key: keyOf(task.firstSeq + k),
        members: { cls: encodeCls(item.label), [payload.ext]: payload.bytes },
      }, { mtime: f.mtime });
    } catch (err) {
      errors.push({ file: item.name, reason: reasonOf(err) });
      continue;
    }
    parts.push(encoded.bytes);
    samples.push({
      key: keyOf(task.firstSeq + k),
      label: item.label,
      members: encoded.members.map((m) => ({ ...m, headerOffset: m.headerOffset + offset, dataOffset: m.dataOffset + offset })),
    });
    offset += encoded.bytes.length;
  }
  const bytes = new Uint8Array(offset);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return { bytes, samples, errors, sum, sumSq, pixels };
}

function reasonOf(err: unknown): string {
  if (err && typeof err === 'object' && 'reason' in err && typeof err.reason === 'string') return err.reason;
  return err instanceof Error ? err.message : String(err);
}

/** Piscina entry point: the result's bytes are transferred, not cloned. */
export default async function (task: ShardTask): Promise<unknown> {
  const result = await runShardTask(task);
  // A custom Transferable: piscina posts `valueSymbol` with `transferableSymbol` in the
  // transfer list (a plain move() of the object would clone the nested buffer).
  return move({
    [transferableSymbol]: result.bytes.buffer,
    [valueSymbol]: result,
  });
}
