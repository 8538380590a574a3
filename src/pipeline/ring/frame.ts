/**
 * The batch frame: the contract between the pipeline and the trainer. One frame is ONE msgpack
 * map, laid out so the two big sections sit at 64-byte-aligned offsets and can be filled in
 * place by workers, while the bytes as a whole stay a plain msgpack document that any msgpack
 * library can read from a file or socket.
 *
 *   map {                                   (fixmap, 11 entries, 12 with meta, +2 for uint8)
 *     "epoch": uint, "step": uint, "rank": uint, "world": uint,
 *     "shape": [n, c, h, w], "dtype": "float32" | "uint8",
 *     ("mean": [c numbers], "std": [c numbers])   uint8 only: (pixel - mean) / std, 0..255 units
 *     "keys": [str x n], ("meta": {str: str|num|bool})
 *     "_pad0": bin8 (0..63 zero bytes)      so that the labels payload starts at a multiple of 64
 *     "labels": bin32 (n x int32 LE)        at labelsOffset
 *     "_pad1": bin8 (0..63 zero bytes)      so that the images payload starts at a multiple of 64
 *     "images": bin32 (n*c*h*w x float32 LE, or x uint8, NCHW)   at imagesOffset; always the last entry
 *   }
 *
 * A uint8 frame carries augmented but unnormalised pixels (4x fewer bytes to write and move); the
 * consumer applies (pixel - mean[c]) / std[c] itself, on its device. A float32 frame has no
 * mean/std entries, so its bytes are those of the format before uint8 frames existed.
 *
 * The sections use bin32 headers whatever their size, so a 3.2 GB image section needs no other
 * code path, and the frame's length is imagesOffset + image bytes.
 */
import { FrameError, type FrameErrorCode } from './errors.ts';
import { Unpackr } from 'msgpackr';
import { MsgpackReader, MsgpackWriter, containerHeaderSize, strHeaderSize, strSize, uintSize, valueSize } from './msgpack.ts';

export { FrameError, type FrameErrorCode };

export type FrameMeta = Record<string, string | number | boolean>;

/** Element type of the images section. */
export type { FrameDtype } from '../../shared/data-feed.ts';
import type { FrameDtype } from '../../shared/data-feed.ts';
export const FRAME_DTYPES: readonly FrameDtype[] = ['float32', 'uint8'];

export interface FrameHeader {
  epoch: number;
  step: number;
  rank: number;
  world: number;
  n: number;
  channels: number;
  height: number;
  width: number;
  keys: string[];
  meta?: FrameMeta;
  /** Absent: float32 (normalised values). 'uint8': raw pixels, with `mean` and `std` to apply. */
  dtype?: FrameDtype;
  /** uint8 frames only: per channel, in 0..255 units. */
  mean?: readonly number[];
  std?: readonly number[];
}

/** Offsets relative to the frame start. */
export interface FrameLayout {
  /** Every byte that is not labels or images payload (map structure, small entries, padding). */
  headerBytes: number;
  labelsOffset: number;
  imagesOffset: number;
  totalBytes: number;
}

interface DecodedBase extends Omit<FrameHeader, 'dtype' | 'mean' | 'std'> {
  labels: Int32Array;
  layout: FrameLayout;
}

/** A float32 frame decodes without a dtype field (as before uint8 frames existed). */
export type DecodedFrame =
  | (DecodedBase & { dtype?: 'float32'; images: Float32Array })
  | (DecodedBase & { dtype: 'uint8'; images: Uint8Array; mean: number[]; std: number[] });

/** Alignment of both sections: a cache line, and enough for any SIMD load of float32. */
export const FRAME_ALIGN = 64;

const UINT32_MAX = 0xffffffff;
// "_pad0"/"_pad1" (fixstr, 6 bytes) + bin8 header (2 bytes).
const PAD_ENTRY_HEAD = 8;
// "labels"/"images" (fixstr, 7 bytes) + bin32 header (5 bytes).
const SECTION_HEAD = 12;
const INT_KEYS = ['epoch', 'step', 'rank', 'world'] as const;
const DIM_KEYS = ['n', 'channels', 'height', 'width'] as const;
// Sizes of the entries whose size does not depend on the header's values (the dtype's value does).
const FIXED_PREFIX = 1 + INT_KEYS.reduce((s, k) => s + strSize(k), 0) + strSize('shape') + 1 + strSize('dtype') + strSize('keys');
// A number takes at most 9 bytes (float64).
const MAX_NUMBER_BYTES = 9;

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

interface FullLayout extends FrameLayout {
  pad0: number;
  pad1: number;
  labelBytes: number;
  imageBytes: number;
}

/** Where a section starts when its pad entry starts at `padAt`, and the pad that gets it there. */
function alignSection(padAt: number): { pad: number; offset: number } {
  const bare = padAt + PAD_ENTRY_HEAD + SECTION_HEAD;
  const pad = (FRAME_ALIGN - (bare % FRAME_ALIGN)) % FRAME_ALIGN;
  return { pad, offset: bare + pad };
}

function layoutFrom(prefixBytes: number, n: number, imageBytes: number): FullLayout {
  const labelBytes = 4 * n;
  const l = alignSection(prefixBytes);
  const i = alignSection(l.offset + labelBytes);
  const totalBytes = i.offset + imageBytes;
  return {
    headerBytes: totalBytes - labelBytes - imageBytes,
    labelsOffset: l.offset,
    imagesOffset: i.offset,
    totalBytes,
    pad0: l.pad,
    pad1: i.pad,
    labelBytes,
    imageBytes,
  };
}

function isUint32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= UINT32_MAX;
}

function metaSize(meta: FrameMeta | undefined): number {
  if (meta === undefined) return 0;
  const entries = Object.entries(meta);
  let size = strSize('meta') + containerHeaderSize(entries.length);
  for (const [k, v] of entries) size += strSize(k) + valueSize(v);
  return size;
}

function bytesPerValue(dtype: FrameDtype | undefined): number {
  return dtype === 'uint8' ? 1 : 4;
}

/** The "mean" and "std" entries of a uint8 frame. */
function statsSize(mean: readonly number[], std: readonly number[]): number {
  let size = strSize('mean') + containerHeaderSize(mean.length) + strSize('std') + containerHeaderSize(std.length);
  for (const v of mean) size += valueSize(v);
  for (const v of std) size += valueSize(v);
  return size;
}

function imageBytesOf(d: { n: number; channels: number; height: number; width: number; dtype?: FrameDtype | undefined }): number {
  const bytes = d.n * d.channels * d.height * d.width * bytesPerValue(d.dtype);
  if (bytes > UINT32_MAX || 4 * d.n > UINT32_MAX) {
    throw new FrameError('invalid', `a section of ${bytes} bytes does not fit a msgpack bin32`);
  }
  return bytes;
}

function checkHeader(h: FrameHeader): void {
  for (const k of [...INT_KEYS, ...DIM_KEYS]) {
    if (!isUint32(h[k])) throw new FrameError('invalid', `${k} must be an integer in [0, 2^32), got ${String(h[k])}`);
  }
  if (h.world < 1 || h.rank >= h.world) {
    throw new FrameError('invalid', `rank ${h.rank} is not in a world of ${h.world}`);
  }
  if (!Array.isArray(h.keys) || h.keys.length !== h.n) {
    throw new FrameError('invalid', `need one key per sample: ${h.n} samples, ${h.keys?.length} keys`);
  }
  for (const k of h.keys) if (typeof k !== 'string') throw new FrameError('invalid', 'keys must be strings');
  if (h.meta !== undefined) {
    for (const [k, v] of Object.entries(h.meta)) {
      const t = typeof v;
      if (t !== 'string' && t !== 'number' && t !== 'boolean') {
        throw new FrameError('invalid', `meta.${k} must be a string, number or boolean`);
      }
    }
  }
  checkDtype(h);
}

/** A uint8 frame needs finite per-channel mean and positive std; a float32 frame has neither. */
function checkDtype(h: Pick<FrameHeader, 'dtype' | 'mean' | 'std' | 'channels'>): void {
  if (h.dtype !== undefined && !FRAME_DTYPES.includes(h.dtype)) {
    throw new FrameError('invalid', `dtype must be one of ${FRAME_DTYPES.join(', ')}, got ${String(h.dtype)}`);
  }
  if (h.dtype !== 'uint8') {
    if (h.mean !== undefined || h.std !== undefined) throw new FrameError('invalid', 'mean and std belong to uint8 frames only');
    return;
  }
  for (const [name, a] of [
    ['mean', h.mean],
    ['std', h.std],
  ] as const) {
    if (!Array.isArray(a) || a.length !== h.channels) {
      throw new FrameError('invalid', `a uint8 frame needs ${name} with one number per channel (${h.channels})`);
    }
    for (const v of a as readonly unknown[]) {
      if (typeof v !== 'number' || !Number.isFinite(v) || (name === 'std' && v <= 0)) {
        throw new FrameError('invalid', `${name} must hold finite numbers${name === 'std' ? ' above 0' : ''}, got ${String(v)}`);
      }
    }
  }
}

function layoutOf(h: FrameHeader): FullLayout {
  checkHeader(h);
  let prefix = FIXED_PREFIX;
  for (const k of INT_KEYS) prefix += uintSize(h[k]);
  for (const k of DIM_KEYS) prefix += uintSize(h[k]);
  prefix += strSize(h.dtype ?? 'float32');
  if (h.dtype === 'uint8') prefix += statsSize(h.mean!, h.std!);
  prefix += containerHeaderSize(h.n);
  for (const k of h.keys) prefix += strSize(k);
  prefix += metaSize(h.meta);
  return layoutFrom(prefix, h.n, imageBytesOf(h));
}

/** The layout writeFrameHeader would produce for `h`, without writing anything. */
export function frameLayout(h: FrameHeader): FrameLayout {
  const { headerBytes, labelsOffset, imagesOffset, totalBytes } = layoutOf(h);
  return { headerBytes, labelsOffset, imagesOffset, totalBytes };
}

/**
 * An upper bound on the frame size for batches of this shape whose keys take at most
 * `maxKeyBytes` UTF-8 bytes each; pass `meta` to also reserve room for a meta map no bigger
 * than that one when encoded. Use it to size ring slots.
 */
export function maxFrameBytes(o: {
  n: number;
  channels: number;
  height: number;
  width: number;
  maxKeyBytes: number;
  meta?: FrameMeta;
  /** Default float32; uint8 also reserves the mean/std entries. */
  dtype?: FrameDtype;
}): number {
  for (const k of [...DIM_KEYS, 'maxKeyBytes'] as const) {
    if (!isUint32(o[k])) throw new FrameError('invalid', `${k} must be an integer in [0, 2^32), got ${String(o[k])}`);
  }
  const prefix =
    FIXED_PREFIX +
    INT_KEYS.length * 5 + // a uint32 takes at most 5 bytes
    uintSize(o.n) +
    uintSize(o.channels) +
    uintSize(o.height) +
    uintSize(o.width) +
    containerHeaderSize(o.n) +
    o.n * (strHeaderSize(o.maxKeyBytes) + o.maxKeyBytes) +
    metaSize(o.meta) +
    strSize(o.dtype ?? 'float32') +
    (o.dtype === 'uint8' ? 2 * (containerHeaderSize(o.channels) + o.channels * MAX_NUMBER_BYTES) + strSize('mean') + strSize('std') : 0);
  return layoutFrom(prefix, o.n, imageBytesOf(o)).totalBytes;
}

/**
 * Writes everything of the frame except the labels and images payloads into `target` (which
 * must hold the whole frame: FrameError 'too-small' otherwise) and says where those go. The
 * padding bytes are zeroed, since a reused slot holds the previous batch.
 *
 * Written by hand on purpose: the loader calls this for every batch, and the workers then fill
 * the sections in place. msgpackr's pack of the same frame builds it in its own buffer with the
 * payload copied in: `npm run bench -- frame` measured 8-23 ms here against 2.0-2.8 s for pack
 * on a 16,384 x 3x64x64 float32 frame (806 MB; 120-250x), 0.3-0.5 ms against 69-137 ms at batch
 * 1,024 (two runs on a shared 2-core machine).
 */
export function writeFrameHeader(target: Uint8Array, h: FrameHeader): FrameLayout {
  const l = layoutOf(h);
  if (target.length < l.totalBytes) {
    throw new FrameError('too-small', `frame needs ${l.totalBytes} bytes, target has ${target.length}`, target.length);
  }
  const w = new MsgpackWriter(target);
  const uint8 = h.dtype === 'uint8';
  w.mapHeader((h.meta === undefined ? 11 : 12) + (uint8 ? 2 : 0));
  for (const k of INT_KEYS) {
    w.str(k);
    w.uint(h[k]);
  }
  w.str('shape');
  w.arrayHeader(4);
  for (const k of DIM_KEYS) w.uint(h[k]);
  w.str('dtype');
  w.str(h.dtype ?? 'float32');
  if (uint8) {
    for (const [name, values] of [
      ['mean', h.mean!],
      ['std', h.std!],
    ] as const) {
      w.str(name);
      w.arrayHeader(values.length);
      for (const v of values) w.value(v);
    }
  }
  w.str('keys');
  w.arrayHeader(h.n);
  for (const k of h.keys) w.str(k);
  if (h.meta !== undefined) {
    const entries = Object.entries(h.meta);
    w.str('meta');
    w.mapHeader(entries.length);
    for (const [k, v] of entries) {
      w.str(k);
      w.value(v);
    }
  }
  w.str('_pad0');
  w.bin8Header(l.pad0);
  w.zeros(l.pad0);
  w.str('labels');
  w.bin32Header(l.labelBytes);
  if (w.pos !== l.labelsOffset) throw new Error(`frame layout bug: labels at ${w.pos}, expected ${l.labelsOffset}`);
  w.pos += l.labelBytes;
  w.str('_pad1');
  w.bin8Header(l.pad1);
  w.zeros(l.pad1);
  w.str('images');
  w.bin32Header(l.imageBytes);
  if (w.pos !== l.imagesOffset) throw new Error(`frame layout bug: images at ${w.pos}, expected ${l.imagesOffset}`);
  return { headerBytes: l.headerBytes, labelsOffset: l.labelsOffset, imagesOffset: l.imagesOffset, totalBytes: l.totalBytes };
}

/** The length of the frame (any msgpack map) starting at bytes[0]; FrameError if incomplete. */
export function frameLength(bytes: Uint8Array): number {
  const r = new MsgpackReader(bytes);
  r.skip(2 * r.mapHeader());
  return r.pos;
}

function fail(code: FrameErrorCode, message: string, offset?: number): never {
  throw new FrameError(code, message, offset);
}

// msgpackr decodes frames (outside the hot loop: the loader itself never parses what it wrote).
// Maps come back as Map, so that a key of another type stays visible; 64-bit integers as numbers
// up to 2^53, else BigInt (refused). 'auto' is handled by msgpackr's unpack but missing from its
// typings.
const unpackr = new Unpackr({ mapsAsObjects: false, int64AsType: 'auto' as 'number' });

const MAX_DEPTH = 64;

/**
 * Whether msgpackr's result holds only what a frame may: nil, booleans, numbers, strings without
 * U+FFFD (which is what msgpackr makes of invalid UTF-8), bin views into `buffer`, arrays, and
 * maps with string keys, nested at most as deep as MsgpackReader allows. Anything else (a BigInt,
 * a value of an ext type such as a Date, msgpackr's 0xc1 marker) means the document needs the
 * strict reader's verdict.
 */
function plain(v: unknown, buffer: ArrayBufferLike, depth: number): boolean {
  if (depth > MAX_DEPTH) return false;
  switch (typeof v) {
    case 'number':
      // 2^53 and beyond only as a float: MsgpackReader refuses such integers.
      return Number.isSafeInteger(v) || !Number.isInteger(v);
    case 'boolean':
      return true;
    case 'string':
      return !v.includes('\uFFFD');
    case 'object': {
      if (v === null) return true;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          const x: unknown = v[i];
          if (typeof x === 'string' ? x.includes('\uFFFD') : !plain(x, buffer, depth + 1)) return false;
        }
        return true;
      }
      if (v instanceof Map) {
        for (const [k, x] of v) if (typeof k !== 'string' || k.includes('\uFFFD') || !plain(x, buffer, depth + 1)) return false;
        return true;
      }
      return v instanceof Uint8Array && v.constructor === Uint8Array && v.buffer === buffer;
    }
    default:
      return false;
  }
}

/**
 * The strict walk of the top-level map (what readFrame did before it used msgpackr): every value
 * decoded by MsgpackReader, which throws a FrameError saying what is wrong and at which byte
 * (truncated, malformed, a duplicate key). Returns when it finds nothing wrong.
 */
function strictWalk(bytes: Uint8Array): void {
  const r = new MsgpackReader(bytes);
  const count = r.mapHeader();
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const keyAt = r.pos;
    const key = r.str();
    if (seen.has(key)) fail('invalid', `duplicate key "${key}"`, keyAt);
    seen.add(key);
    r.value();
  }
}

/** Where the value of top-level `key` starts (for error messages; the document is known good). */
function valueOffset(bytes: Uint8Array, key: string): number | undefined {
  try {
    const r = new MsgpackReader(bytes);
    const count = r.mapHeader();
    for (let i = 0; i < count; i++) {
      if (r.str() === key) return r.pos;
      r.skip();
    }
  } catch {
    // Not expected for a document msgpackr and the checks accepted; the message stands alone.
  }
  return undefined;
}

/** A top-level entry: key and value extents, and a bin value's payload. */
interface Entry {
  keyAt: number;
  valueAt: number;
  end: number;
  /** A bin value's payload as a view of the frame (the labels and images sections). */
  bin: Uint8Array | null;
}

/** The top-level entries' extents, bins located; nothing decoded (MsgpackReader.skip). */
function entries(bytes: Uint8Array): { head: number; list: Entry[]; end: number } {
  const r = new MsgpackReader(bytes);
  const count = r.mapHeader();
  const head = r.pos;
  const list: Entry[] = [];
  for (let i = 0; i < count; i++) {
    const keyAt = r.pos;
    r.skip();
    const valueAt = r.pos;
    r.skip();
    const tag = bytes[valueAt]!;
    let bin: Uint8Array | null = null;
    if (tag >= 0xc4 && tag <= 0xc6) {
      const start = valueAt + (tag === 0xc4 ? 2 : tag === 0xc5 ? 3 : 5);
      bin = bytes.subarray(start, r.pos);
    }
    list.push({ keyAt, valueAt, end: r.pos, bin });
  }
  return { head, list, end: r.pos };
}

/**
 * The frame's top-level map, and where the frame ends. The sections (top-level bins) are located
 * in place; everything else is copied into a small document, with nil where a section was, that
 * msgpackr decodes. The copy keeps msgpackr away from the payload and off shared memory, where
 * its native string decoder does not run. A document that MsgpackReader or msgpackr refuses, or
 * whose values break plain() or repeat a key, goes through strictWalk, which throws the precise
 * FrameError; msgpackr's own error is the fallback when the strict walk finds none.
 */
function decodeFrameMap(bytes: Uint8Array): { fields: Map<string, unknown>; end: number } {
  let located: ReturnType<typeof entries>;
  try {
    located = entries(bytes);
  } catch (e) {
    strictWalk(bytes);
    throw e;
  }
  const { head, list, end } = located;
  let size = head;
  for (const e of list) size += e.bin ? e.valueAt - e.keyAt + 1 : e.end - e.keyAt;
  const small = new Uint8Array(size);
  small.set(bytes.subarray(0, head));
  let at = head;
  for (const e of list) {
    if (e.bin) {
      small.set(bytes.subarray(e.keyAt, e.valueAt), at);
      at += e.valueAt - e.keyAt;
      small[at++] = 0xc0;
    } else {
      small.set(bytes.subarray(e.keyAt, e.end), at);
      at += e.end - e.keyAt;
    }
  }
  let doc: unknown;
  try {
    doc = unpackr.unpack(small);
  } catch (e) {
    strictWalk(bytes);
    fail('malformed', `msgpack: ${(e as Error).message}`, 0);
  }
  if (!(doc instanceof Map) || doc.size !== list.length || !plain(doc, small.buffer, 0)) {
    strictWalk(bytes);
    // The strict walk found nothing wrong: a genuine U+FFFD in a string.
  }
  const fields = doc as Map<string, unknown>;
  let i = 0;
  for (const key of fields.keys()) {
    const bin = list[i++]!.bin;
    if (bin) fields.set(key, bin);
  }
  return { fields, end };
}

// Readers are more lenient than the writer: other encoders may send counters past 2^32.
function uintField(v: unknown, key: string, at: () => number | undefined): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail('invalid', `"${key}" must be a non-negative integer`, at());
  return v;
}

/**
 * A section as a typed array: a zero-copy view when the payload is 4-byte aligned in its buffer
 * (always the case for frames written here into an aligned buffer), otherwise a copy.
 */
function section(bin: Uint8Array, float: boolean): Int32Array | Float32Array {
  const count = bin.length / 4;
  if (LITTLE_ENDIAN) {
    if (bin.byteOffset % 4 === 0) return float ? new Float32Array(bin.buffer, bin.byteOffset, count) : new Int32Array(bin.buffer, bin.byteOffset, count);
    const copy = bin.slice().buffer;
    return float ? new Float32Array(copy) : new Int32Array(copy);
  }
  // The format is little-endian on the wire; a big-endian host has to swap.
  const dv = new DataView(bin.buffer, bin.byteOffset, bin.length);
  const out = float ? new Float32Array(count) : new Int32Array(count);
  for (let i = 0; i < count; i++) out[i] = float ? dv.getFloat32(4 * i, true) : dv.getInt32(4 * i, true);
  return out;
}

/**
 * Parses the frame at the start of `bytes` (trailing bytes, e.g. the next frame, are ignored).
 * Accepts any encoding of the same map (key order, int widths, bin8 sections), so frames
 * re-encoded by another msgpack library read back too. The labels/images views alias `bytes`
 * when aligned: copy them before the memory is reused (e.g. before a ring slot is released).
 */
export function readFrame(bytes: Uint8Array): DecodedFrame {
  const { fields, end } = decodeFrameMap(bytes);
  const at = (key: string) => (): number | undefined => valueOffset(bytes, key);
  const get = (key: string): unknown => {
    if (!fields.has(key)) fail('invalid', `missing key "${key}"`, end);
    return fields.get(key);
  };

  const [epoch, step, rank, world] = INT_KEYS.map((k) => uintField(get(k), k, at(k))) as [number, number, number, number];

  const shape = get('shape');
  if (!Array.isArray(shape) || shape.length !== 4) fail('invalid', '"shape" must be [n, c, h, w]', at('shape')());
  const [n, channels, height, width] = shape.map((d) => uintField(d, 'shape', at('shape'))) as [number, number, number, number];

  const dtype = get('dtype');
  if (dtype !== 'float32' && dtype !== 'uint8') fail('invalid', `unsupported dtype ${JSON.stringify(dtype)}`, at('dtype')());
  const uint8 = dtype === 'uint8';
  const stats = (key: 'mean' | 'std'): number[] | undefined => {
    if (!uint8) return undefined;
    if (!fields.has(key)) fail('invalid', `a uint8 frame needs "${key}"`, at('dtype')());
    const v = fields.get(key);
    const ok = Array.isArray(v) && v.length === channels && v.every((x) => typeof x === 'number' && Number.isFinite(x) && (key === 'mean' || x > 0));
    if (!ok) fail('invalid', `"${key}" must be ${channels} finite numbers${key === 'std' ? ' above 0' : ''}`, at(key)());
    return v as number[];
  };
  const mean = stats('mean');
  const std = stats('std');

  const keys = get('keys');
  if (!Array.isArray(keys) || keys.length !== n || !keys.every((k) => typeof k === 'string')) {
    fail('invalid', `"keys" must be ${n} strings`, at('keys')());
  }

  let meta: FrameMeta | undefined;
  if (fields.has('meta')) {
    const m = fields.get('meta');
    if (!(m instanceof Map)) fail('invalid', '"meta" must be a map', at('meta')());
    meta = {};
    for (const [k, v] of m as Map<string, unknown>) {
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
        fail('invalid', `meta.${k} must be a string, number or boolean`, at('meta')());
      }
      meta[k] = v;
    }
  }

  const imageBytes = n * channels * height * width * (uint8 ? 1 : 4);
  const sectionBin = (key: string, expected: number): Uint8Array => {
    const v = get(key);
    if (!(v instanceof Uint8Array)) fail('invalid', `"${key}" must be bin`, at(key)());
    if (v.length !== expected) fail('invalid', `"${key}" has ${v.length} bytes, shape needs ${expected}`, at(key)());
    return v;
  };
  const labelsBin = sectionBin('labels', 4 * n);
  const imagesBin = sectionBin('images', imageBytes);
  const imagesOffset = imagesBin.byteOffset - bytes.byteOffset;

  const base: DecodedBase = {
    epoch,
    step,
    rank,
    world,
    n,
    channels,
    height,
    width,
    keys: keys as string[],
    labels: section(labelsBin, false) as Int32Array,
    layout: {
      headerBytes: end - labelsBin.length - imagesBin.length,
      labelsOffset: labelsBin.byteOffset - bytes.byteOffset,
      imagesOffset,
      totalBytes: end,
    },
  };
  if (meta !== undefined) base.meta = meta;
  // Bytes need no alignment: the uint8 section is always a zero-copy view (a Buffer's if `bytes` is one).
  if (uint8) return { ...base, dtype: 'uint8', images: bytes.subarray(imagesOffset, imagesOffset + imagesBin.length), mean: mean!, std: std! };
  return { ...base, images: section(imagesBin, true) as Float32Array };
}
