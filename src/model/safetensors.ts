// The safetensors format, written and read by hand (https://github.com/huggingface/safetensors):
// 8-byte little-endian header length N, N bytes of JSON { name: {dtype, shape, data_offsets:
// [begin, end)}, "__metadata__": {str: str} }, then the raw little-endian tensor bytes. Offsets
// are relative to the end of the header. The header is padded with spaces to a multiple of 8 so
// the data section stays aligned, as the reference writer does.
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { endianness } from 'node:os';
import { SafetensorsError } from './errors.ts';
import { numel } from './layout.ts';

export interface NamedTensor {
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, NamedTensor>;
  metadata: Record<string, string>;
}

/** Dtypes this reader converts to float32; the writer always writes F32. */
const READ_DTYPES = { F32: 4, F64: 8, F16: 2, BF16: 2 } as const;
type ReadDtype = keyof typeof READ_DTYPES;

const MAX_HEADER = 100 * 1024 * 1024;

if (endianness() !== 'LE') {
  // Typed arrays use the host byte order; safetensors is little-endian by definition.
  throw new Error('safetensors: big-endian hosts are not supported');
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** Header bytes (length prefix included) for `tensors` laid out back to back in map order. */
function encodeHeader(tensors: ReadonlyMap<string, NamedTensor>, metadata: Record<string, string> | undefined): Buffer {
  const header: Record<string, HeaderEntry | Record<string, string>> = {};
  if (metadata && Object.keys(metadata).length > 0) header['__metadata__'] = metadata;
  let offset = 0;
  for (const [name, t] of tensors) {
    if (name === '__metadata__') throw new SafetensorsError(name, 'reserved tensor name');
    if (numel(t.shape) !== t.data.length) {
      throw new SafetensorsError(name, `shape [${t.shape}] needs ${numel(t.shape)} values, data has ${t.data.length}`);
    }
    const bytes = t.data.length * 4;
    header[name] = { dtype: 'F32', shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const len = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - ((8 + len) % 8)) % 8);
  const body = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + body.length);
  out.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(out, 8);
  return out;
}

function tensorBytes(t: NamedTensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** The whole file in memory (small models, tests). */
export function encodeSafetensors(tensors: ReadonlyMap<string, NamedTensor>, metadata?: Record<string, string>): Buffer {
  return Buffer.concat([encodeHeader(tensors, metadata), ...[...tensors.values()].map(tensorBytes)]);
}

/** Streams the file to `path` tensor by tensor (no second copy of a 500 MB model); fsyncs. */
export function writeSafetensorsFile(path: string, tensors: ReadonlyMap<string, NamedTensor>, metadata?: Record<string, string>): void {
  const fd = openSync(path, 'w');
  try {
    const writeAll = (buf: Buffer): void => {
      let done = 0;
      while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done);
    };
    writeAll(encodeHeader(tensors, metadata));
    for (const t of tensors.values()) writeAll(tensorBytes(t));
  } finally {
    closeSync(fd);
  }
}

function toFloat32(dtype: ReadDtype, bytes: Buffer, count: number): Float32Array {
  const out = new Float32Array(count);
  switch (dtype) {
    case 'F32': {
      // Copy through a fresh buffer: the source may sit at an offset that is not 4-aligned.
      new Uint8Array(out.buffer).set(bytes);
      return out;
    }
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = bytes.readDoubleLE(8 * i);
      return out;
    case 'BF16': {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) u[i] = bytes.readUInt16LE(2 * i) << 16;
      return out;
    }
    case 'F16':
      for (let i = 0; i < count; i++) out[i] = halfToFloat(bytes.readUInt16LE(2 * i));
      return out;
  }
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function decodeSafetensors(buf: Buffer, where = 'safetensors'): SafetensorsFile {
  if (buf.length < 8) throw new SafetensorsError(where, `file is ${buf.length} bytes, shorter than the 8-byte header length`);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER) || 8 + Number(n) > buf.length) {
    throw new SafetensorsError(where, `header length ${n} does not fit a ${buf.length}-byte file`);
  }
  const headerLen = Number(n);
  let header: unknown;
  try {
    header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8'));
  } catch (e) {
    throw new SafetensorsError(where, `header is not JSON: ${(e as Error).message}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new SafetensorsError(where, 'header is not a JSON object');
  }
  const data = buf.subarray(8 + headerLen);
  const metadata: Record<string, string> = {};
  const spans: [number, number, string][] = [];
  const tensors = new Map<string, NamedTensor>();
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') throw new SafetensorsError(where, `__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const e = raw as Partial<HeaderEntry>;
    const at = `${where}: tensor ${name}`;
    if (typeof e.dtype !== 'string' || !(e.dtype in READ_DTYPES)) {
      throw new SafetensorsError(at, `dtype ${String(e.dtype)} is not one of ${Object.keys(READ_DTYPES).join(', ')}`);
    }
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new SafetensorsError(at, `bad shape ${JSON.stringify(e.shape)}`);
    }
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isInteger(o) && o >= 0) || off[0] > off[1] || off[1] > data.length) {
      throw new SafetensorsError(at, `bad data_offsets ${JSON.stringify(off)} for a ${data.length}-byte data section`);
    }
    const dtype = e.dtype as ReadDtype;
    const count = numel(e.shape);
    if (off[1] - off[0] !== count * READ_DTYPES[dtype]) {
      throw new SafetensorsError(at, `data_offsets span ${off[1] - off[0]} bytes, ${dtype}[${e.shape}] needs ${count * READ_DTYPES[dtype]}`);
    }
    spans.push([off[0], off[1], name]);
    tensors.set(name, { shape: [...e.shape], data: toFloat32(dtype, data.subarray(off[0], off[1]), count) });
  }
  // The format forbids holes and overlaps: the spans must tile the data section exactly.
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let end = 0;
  for (const [b, e, name] of spans) {
    if (b !== end) throw new SafetensorsError(`${where}: tensor ${name}`, `data starts at ${b}, expected ${end} (hole or overlap)`);
    end = e;
  }
  if (end !== data.length) throw new SafetensorsError(where, `${data.length - end} trailing bytes after the last tensor`);
  return { tensors, metadata };
}

export function readSafetensorsFile(path: string): SafetensorsFile {
  return decodeSafetensors(readFileSync(path), path);
}
