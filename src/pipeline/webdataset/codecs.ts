/**
 * Payload codecs with webdataset's conventions: class labels as decimal ASCII, JSON, text,
 * NumPy .npy (header byte-identical to numpy.save), and webdataset's default decode rules.
 */
import { gunzipSync } from 'node:zlib';
import { SampleFormatError, type ErrorLocation } from './errors.ts';
import type { WdsSample } from './samples.ts';

const utf8 = new TextDecoder('utf-8');
const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

export function encodeCls(n: number): Uint8Array {
  if (!Number.isSafeInteger(n)) throw new SampleFormatError(`class label must be an integer, got ${n}`);
  return encoder.encode(String(n));
}

/** Python's int(bytes): surrounding whitespace, a sign and digit-group underscores allowed. */
export function decodeCls(b: Uint8Array, where: ErrorLocation = {}): number {
  const text = utf8.decode(b).trim();
  if (!/^[+-]?\d+(?:_\d+)*$/.test(text)) {
    throw new SampleFormatError(`class label ${JSON.stringify(text.slice(0, 40))} is not an integer`, where);
  }
  const n = Number(text.replace(/_/g, ''));
  if (!Number.isSafeInteger(n)) throw new SampleFormatError(`class label ${text} is out of range`, where);
  return n;
}

/** Compact JSON (not Python's ", " separators: both parse the same). */
export function encodeJson(v: unknown): Uint8Array {
  const text = JSON.stringify(v);
  if (text === undefined) throw new SampleFormatError(`value is not JSON-serialisable`);
  return encoder.encode(text);
}

export function decodeJson(b: Uint8Array, where: ErrorLocation = {}): unknown {
  try {
    return JSON.parse(utf8Strict.decode(b)) as unknown;
  } catch (e) {
    throw new SampleFormatError(`invalid JSON payload: ${(e as Error).message}`, where, { cause: e });
  }
}

export function decodeText(b: Uint8Array, where: ErrorLocation = {}): string {
  try {
    return utf8Strict.decode(b);
  } catch (e) {
    throw new SampleFormatError(`text payload is not valid UTF-8`, where, { cause: e });
  }
}

// ---------------------------------------------------------------------------------------
// NumPy .npy

export type NpyDtype = '|u1' | '<u2' | '<i4' | '<f4' | '<f8' | '<i8';

const ITEMSIZE: Record<NpyDtype, number> = { '|u1': 1, '<u2': 2, '<i4': 4, '<f4': 4, '<f8': 8, '<i8': 8 };
const NPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
const ARRAY_ALIGN = 64;
// numpy leaves room for the first axis to grow to this many digits in place.
const GROWTH_AXIS_MAX_DIGITS = 21;

function checkShape(shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new SampleFormatError(`invalid npy shape (${shape.join(', ')})`);
  }
}

/** Python's repr() of the shape tuple. */
function shapeRepr(shape: readonly number[]): string {
  if (shape.length === 0) return '()';
  if (shape.length === 1) return `(${shape[0]},)`;
  return `(${shape.join(', ')})`;
}

// Shard jobs write millions of arrays of a handful of shapes: formatting each header cost
// several microseconds an image.
const headerCache = new Map<string, Uint8Array>();

/**
 * The header numpy.save writes for a C-order array (format 1.0, or 2.0 if it must). The result
 * is shared between calls with the same shape and dtype: copy it, do not modify it.
 */
export function npyHeader(shape: readonly number[], dtype: NpyDtype = '|u1'): Uint8Array {
  const key = `${dtype}${shape.join(',')}`;
  const hit = headerCache.get(key);
  if (hit) return hit;
  const header = formatNpyHeader(shape, dtype);
  if (headerCache.size < 256) headerCache.set(key, header);
  return header;
}

function formatNpyHeader(shape: readonly number[], dtype: NpyDtype): Uint8Array {
  checkShape(shape);
  if (!(dtype in ITEMSIZE)) throw new SampleFormatError(`unsupported npy dtype ${JSON.stringify(dtype)}`);
  let dict = `{'descr': '${dtype}', 'fortran_order': False, 'shape': ${shapeRepr(shape)}, }`;
  if (shape.length > 0) dict += ' '.repeat(GROWTH_AXIS_MAX_DIGITS - String(shape[0]).length);
  const hlen = dict.length + 1; // + '\n'
  let lenBytes = 2;
  let padlen = ARRAY_ALIGN - ((NPY_MAGIC.length + 2 + lenBytes + hlen) % ARRAY_ALIGN);
  let major = 1;
  if (hlen + padlen > 0xffff) {
    major = 2;
    lenBytes = 4;
    padlen = ARRAY_ALIGN - ((NPY_MAGIC.length + 2 + lenBytes + hlen) % ARRAY_ALIGN);
  }
  const prefix = NPY_MAGIC.length + 2 + lenBytes;
  const out = new Uint8Array(prefix + hlen + padlen);
  out.set(NPY_MAGIC, 0);
  out[6] = major;
  out[7] = 0;
  const dv = new DataView(out.buffer);
  if (lenBytes === 2) dv.setUint16(8, hlen + padlen, true);
  else dv.setUint32(8, hlen + padlen, true);
  for (let i = 0; i < dict.length; i++) out[prefix + i] = dict.charCodeAt(i);
  out.fill(0x20, prefix + dict.length, out.length - 1);
  out[out.length - 1] = 0x0a;
  return out;
}

export function encodeNpy(data: Uint8Array, shape: readonly number[], dtype: NpyDtype = '|u1'): Uint8Array {
  const header = npyHeader(shape, dtype);
  const count = shape.reduce((a, b) => a * b, 1);
  const nbytes = count * ITEMSIZE[dtype];
  if (data.byteLength !== nbytes) {
    throw new SampleFormatError(`npy data is ${data.byteLength} bytes, shape ${shapeRepr(shape)} of ${dtype} needs ${nbytes}`);
  }
  const out = new Uint8Array(header.length + nbytes);
  out.set(header, 0);
  out.set(data, header.length);
  return out;
}

export interface NpyArray {
  dtype: NpyDtype | string;
  shape: number[];
  fortranOrder: boolean;
  dataOffset: number;
  /** A view into the input bytes, not a copy. */
  data: Uint8Array;
}

function itemSize(descr: string): number | null {
  const m = /^[<>|=]?([a-zA-Z?])(\d*)$/.exec(descr);
  if (m === null) return null;
  const kind = m[1]!;
  if (kind === '?' || (kind === 'b' && m[2] === '')) return 1;
  if (kind === 'O' || m[2] === '') return null;
  const n = Number(m[2]);
  return kind === 'U' ? 4 * n : n; // 'U' counts UCS-4 characters
}

interface NpyHeaderFields {
  descr: string;
  shape: number[];
  fortranOrder: boolean;
}

// A dataset repeats a handful of header texts millions of times; the regexes below cost ~0.3 us
// an image in the loader's hot loop (2-8% of its rate at 64x64), a Map lookup far less.
const parsedHeaders = new Map<string, NpyHeaderFields>();

function parseNpyHeaderText(text: string, where: ErrorLocation): NpyHeaderFields {
  const hit = parsedHeaders.get(text);
  if (hit) return { descr: hit.descr, shape: [...hit.shape], fortranOrder: hit.fortranOrder };
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]*)['"]/.exec(text)?.[1];
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(text)?.[1];
  const shapeText = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new SampleFormatError(`unparseable .npy header ${JSON.stringify(text.trim())}`, where);
  }
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => (/^\d+L?$/.test(s) ? Number(s.replace('L', '')) : NaN));
  if (shape.some((d) => !Number.isSafeInteger(d))) throw new SampleFormatError(`bad .npy shape (${shapeText})`, where);
  const fields = { descr, shape, fortranOrder: fortran === 'True' };
  if (parsedHeaders.size < 256) parsedHeaders.set(text, { ...fields, shape: [...shape] });
  return fields;
}

export function decodeNpy(b: Uint8Array, where: ErrorLocation = {}): NpyArray {
  for (let i = 0; i < NPY_MAGIC.length; i++) {
    if (b[i] !== NPY_MAGIC[i]) throw new SampleFormatError(`not a .npy payload (bad magic)`, where);
  }
  if (b.length < 10) throw new SampleFormatError(`truncated .npy header`, where);
  const major = b[6]!;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let start: number;
  let hlen: number;
  if (major === 1) {
    hlen = dv.getUint16(8, true);
    start = 10;
  } else if (major === 2 || major === 3) {
    if (b.length < 12) throw new SampleFormatError(`truncated .npy header`, where);
    hlen = dv.getUint32(8, true);
    start = 12;
  } else {
    throw new SampleFormatError(`unsupported .npy format version ${major}.${b[7]}`, where);
  }
  if (b.length < start + hlen) throw new SampleFormatError(`truncated .npy header`, where);
  const text = Buffer.from(b.buffer, b.byteOffset + start, hlen).toString(major === 3 ? 'utf8' : 'latin1');
  const { descr, shape, fortranOrder } = parseNpyHeaderText(text, where);
  if (fortranOrder && shape.filter((d) => d !== 1).length > 1) {
    throw new SampleFormatError(`Fortran-order .npy arrays are not supported`, where);
  }
  const size = itemSize(descr);
  if (size === null) throw new SampleFormatError(`unsupported .npy dtype ${JSON.stringify(descr)}`, where);
  const dataOffset = start + hlen;
  const nbytes = shape.reduce((a, d) => a * d, 1) * size;
  if (b.length < dataOffset + nbytes) {
    throw new SampleFormatError(`truncated .npy data: ${b.length - dataOffset} of ${nbytes} bytes`, where);
  }
  return { dtype: descr, shape, fortranOrder, dataOffset, data: b.subarray(dataOffset, dataOffset + nbytes) };
}

// ---------------------------------------------------------------------------------------
// Sample decoding (webdataset's Decoder with its default handlers, minus images)

/** Members that hold a sample's class as decimal ASCII, in the order a reader should prefer them. */
export const LABEL_EXTS: readonly string[] = ['cls', 'cls2', 'index', 'inx', 'id'];
const INT_EXTS = new Set(LABEL_EXTS);
const TEXT_EXTS = new Set(['txt', 'text', 'transcript']);
const JSON_EXTS = new Set(['json', 'jsn']);

/**
 * Decodes a sample as webdataset's default decoder does, leaving images (and anything it
 * does not know) as bytes: one trailing ".gz" is gunzipped first, then the last extension
 * component picks the decoder (so "seg.json" is JSON). Keys starting "__" pass through.
 */
export function decodeSample(s: WdsSample, _opts: { images?: 'bytes' } = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(s)) {
    const value = s[key]!;
    if (key.startsWith('__') || typeof value === 'string') {
      out[key] = value;
      continue;
    }
    const where: ErrorLocation = { url: s.__url__, key: s.__key__, member: `${s.__key__}.${key}` };
    let ext = key;
    let data: Buffer = value;
    if (`.${ext}`.endsWith('.gz')) {
      try {
        data = gunzipSync(data);
      } catch (e) {
        throw new SampleFormatError(`cannot gunzip payload: ${(e as Error).message}`, where, { cause: e });
      }
      ext = ext.slice(0, -3);
    }
    const last = ext.slice(ext.lastIndexOf('.') + 1);
    if (INT_EXTS.has(last)) out[key] = decodeCls(data, where);
    else if (TEXT_EXTS.has(last)) out[key] = decodeText(data, where);
    else if (JSON_EXTS.has(last)) out[key] = decodeJson(data, where);
    else if (last === 'npy') out[key] = decodeNpy(data, where);
    else out[key] = data;
  }
  return out;
}
