// Test helpers for the torch importer: a small zip writer (stored / deflate, optional zip64
// records, local-header padding like torch.save's) and a byte builder for hand-written pickles.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { deflateRawSync } from 'node:zlib';
import { crc32 } from '../../../src/model/torch-import/zip.ts';

export const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
/** The npm run import entry point. */
export const CLI = fileURLToPath(new URL('../../../src/cli/import.ts', import.meta.url));

export interface Expected {
  model: { arch: string; res: number; channels: number; num_classes: number };
  state_dict: Record<string, { dtype: string; shape: number[]; values: number[] }>;
  half_state_dict: Record<string, { dtype: string; shape: number[]; values: number[] }>;
  tensors: Record<string, { dtype: string; shape: number[]; values: number[] }>;
  x: { shape: number[]; values: number[] };
  logits: { shape: number[]; values: number[] };
  malicious: Record<string, { file: string; global: string; marker: string }>;
}

export const expected: Expected = JSON.parse(readFileSync(`${FIXTURES}expected.json`, 'utf8')) as Expected;

export interface ZipInput {
  name: string;
  data: Uint8Array;
  deflate?: boolean;
  /** Bytes of padding in the local header's extra field (torch.save aligns data to 64). */
  pad?: number;
  /** Override the CRC written to the directory. */
  crc?: number;
  flags?: number;
  method?: number;
}

export interface ZipOptions {
  comment?: Buffer;
  /** Write zip64 central-directory fields and end records even though nothing needs them. */
  zip64?: boolean;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
}
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}
function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

export function makeZip(entries: ZipInput[], opts: ZipOptions = {}): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let off = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const body = e.deflate ? deflateRawSync(e.data) : Buffer.from(e.data);
    const method = e.method ?? (e.deflate ? 8 : 0);
    const crc = e.crc ?? crc32(e.data);
    const flags = (e.flags ?? 0) | 0x800;
    const pad = Buffer.alloc(e.pad ? 4 + e.pad : 0);
    if (e.pad) {
      pad.writeUInt16LE(0x4246, 0); // "FB", as PyTorch's writer
      pad.writeUInt16LE(e.pad, 2);
    }
    const local = Buffer.concat([
      u32(0x04034b50),
      u16(20),
      u16(flags),
      u16(method),
      u16(0),
      u16(0x21),
      u32(crc),
      u32(body.length),
      u32(e.data.length),
      u16(name.length),
      u16(pad.length),
      name,
      pad,
    ]);
    let extra = Buffer.alloc(0);
    let csize = body.length;
    let usize = e.data.length;
    let loff = off;
    if (opts.zip64) {
      extra = Buffer.concat([u16(1), u16(24), u64(usize), u64(csize), u64(loff)]);
      csize = usize = loff = 0xffffffff;
    }
    central.push(
      Buffer.concat([
        u32(0x02014b50),
        u16(45),
        u16(45),
        u16(flags),
        u16(method),
        u16(0),
        u16(0x21),
        u32(crc),
        u32(csize),
        u32(usize),
        u16(name.length),
        u16(extra.length),
        u16(0),
        u16(0),
        u16(0),
        u32(0),
        u32(loff),
        name,
        extra,
      ]),
    );
    parts.push(local, body);
    off += local.length + body.length;
  }
  const cd = Buffer.concat(central);
  const cdOffset = off;
  const comment = opts.comment ?? Buffer.alloc(0);
  const tail: Buffer[] = [];
  if (opts.zip64) {
    const recPos = cdOffset + cd.length;
    tail.push(
      Buffer.concat([u32(0x06064b50), u64(44), u16(45), u16(45), u32(0), u32(0), u64(entries.length), u64(entries.length), u64(cd.length), u64(cdOffset)]),
    );
    tail.push(Buffer.concat([u32(0x07064b50), u32(0), u64(recPos), u32(1)]));
    tail.push(Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(0xffff), u16(0xffff), u32(0xffffffff), u32(0xffffffff), u16(comment.length), comment]));
  } else {
    tail.push(
      Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(entries.length), u16(entries.length), u32(cd.length), u32(cdOffset), u16(comment.length), comment]),
    );
  }
  return Buffer.concat([...parts, cd, ...tail]);
}

/** A torch.save-shaped archive around a pickle: archive/data.pkl, archive/data/<key>, archive/version. */
export function torchZip(pkl: Uint8Array, storages: Record<string, Uint8Array> = {}, extra: ZipInput[] = []): Buffer {
  return makeZip([
    { name: 'archive/data.pkl', data: pkl },
    ...Object.entries(storages).map(([k, data]) => ({ name: `archive/data/${k}`, data, pad: 40 })),
    { name: 'archive/version', data: Buffer.from('3\n') },
    ...extra,
  ]);
}

/** Pickle opcodes as bytes, for hand-written streams. */
export const P = {
  proto: (v = 2) => Buffer.from([0x80, v]),
  stop: Buffer.from('.'),
  mark: Buffer.from('('),
  none: Buffer.from('N'),
  true: Buffer.from([0x88]),
  false: Buffer.from([0x89]),
  emptyDict: Buffer.from('}'),
  emptyList: Buffer.from(']'),
  emptyTuple: Buffer.from(')'),
  tuple: Buffer.from('t'),
  tuple1: Buffer.from([0x85]),
  tuple2: Buffer.from([0x86]),
  tuple3: Buffer.from([0x87]),
  setitem: Buffer.from('s'),
  setitems: Buffer.from('u'),
  append: Buffer.from('a'),
  appends: Buffer.from('e'),
  reduce: Buffer.from('R'),
  build: Buffer.from('b'),
  persid: Buffer.from('Q'),
  stackGlobal: Buffer.from([0x93]),
  memoize: Buffer.from([0x94]),
  int(n: number): Buffer {
    if (n >= 0 && n < 256) return Buffer.from([0x4b, n]);
    if (n >= 0 && n < 65536) return Buffer.concat([Buffer.from('M'), u16(n)]);
    const b = Buffer.alloc(5);
    b[0] = 0x4a;
    b.writeInt32LE(n, 1);
    return b;
  },
  long1(n: bigint): Buffer {
    const bytes: number[] = [];
    let v = n;
    if (v !== 0n) {
      for (;;) {
        bytes.push(Number(v & 0xffn));
        v >>= 8n;
        const sign = bytes[bytes.length - 1]! & 0x80;
        if ((v === 0n && !sign) || (v === -1n && sign)) break;
      }
    }
    return Buffer.concat([Buffer.from([0x8a, bytes.length]), Buffer.from(bytes)]);
  },
  float(x: number): Buffer {
    const b = Buffer.alloc(9);
    b[0] = 0x47;
    b.writeDoubleBE(x, 1);
    return b;
  },
  str(s: string): Buffer {
    const d = Buffer.from(s, 'utf8');
    return Buffer.concat([Buffer.from('X'), u32(d.length), d]);
  },
  shortStr(s: string): Buffer {
    const d = Buffer.from(s, 'utf8');
    return Buffer.concat([Buffer.from([0x8c, d.length]), d]);
  },
  global: (mod: string, name: string) => Buffer.from(`c${mod}\n${name}\n`, 'utf8'),
  put: (i: number) => Buffer.from([0x71, i]),
  get: (i: number) => Buffer.from([0x68, i]),
};

export function pk(...parts: Buffer[]): Buffer {
  return Buffer.concat(parts);
}

/** A _rebuild_tensor_v2 call on storage `key` (FloatStorage unless told) with shape/stride/offset. */
export function tensorCall(key: string, numel: number, shape: number[], stride: number[], offset = 0, storage = 'FloatStorage'): Buffer {
  const tup = (xs: number[]): Buffer => (xs.length === 0 ? P.emptyTuple : pk(P.mark, ...xs.map(P.int), P.tuple));
  return pk(
    P.global('torch._utils', '_rebuild_tensor_v2'),
    P.mark,
    P.mark,
    P.str('storage'),
    P.global('torch', storage),
    P.str(key),
    P.str('cpu'),
    P.int(numel),
    P.tuple,
    P.persid,
    P.int(offset),
    tup(shape),
    tup(stride),
    P.false,
    P.global('collections', 'OrderedDict'),
    P.emptyTuple,
    P.reduce,
    P.tuple,
    P.reduce,
  );
}

/** Float32 little-endian bytes. */
export function f32(values: number[]): Buffer {
  return Buffer.from(Float32Array.from(values).buffer);
}
