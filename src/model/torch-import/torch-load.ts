// torch.load for the zip format of torch.save (PyTorch >= 1.6), without Python and without
// running anything from the file. Layout of such an archive:
//   <name>/data.pkl        the object graph, pickle protocol 2; tensors are REDUCE calls of
//                          torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)
//                          and storages are persistent ids ('storage', torch.FloatStorage,
//                          key, location, numel)
//   <name>/data/<key>      each storage's raw bytes, little-endian unless <name>/byteorder says big
//   <name>/version         format version (torch 2.x also writes .data/version, serialization_id)
// The pickle is read with pickle.ts and TORCH_GLOBALS, the only names it may use. Tensors come
// out as TorchTensor (storage, offset, shape, strides) and are read to float32 on demand.
import { PickleError, TorchFileError, ZipError } from './errors.ts';
import { PyCallable, PyDict, PyGlobal, PyOpaque, PyTuple, describe, unpickle, type PyValue } from './pickle.ts';
import { ZipArchive, bufferSource, fileSource, type ByteSource } from './zip.ts';

export type TorchDtype = 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int64' | 'int32' | 'uint8' | 'bool';

export const ITEM_SIZE: Record<TorchDtype, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  float64: 8,
  int64: 8,
  int32: 4,
  uint8: 1,
  bool: 1,
};

/** The storage classes a state dict may name, and their element types. */
export const STORAGE_TYPES: ReadonlyMap<string, TorchDtype> = new Map([
  ['torch.FloatStorage', 'float32'],
  ['torch.HalfStorage', 'float16'],
  ['torch.BFloat16Storage', 'bfloat16'],
  ['torch.DoubleStorage', 'float64'],
  ['torch.LongStorage', 'int64'],
  ['torch.IntStorage', 'int32'],
  ['torch.ByteStorage', 'uint8'],
  ['torch.BoolStorage', 'bool'],
]);

export class TorchStorage extends PyOpaque {
  readonly pyType = 'storage';
  constructor(
    readonly key: string,
    readonly dtype: TorchDtype,
    readonly numel: number,
    readonly location: string,
  ) {
    super();
  }
}

export class TorchTensor extends PyOpaque {
  readonly pyType = 'tensor';
  constructor(
    readonly storage: TorchStorage,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
    readonly requiresGrad: boolean,
    readonly isParameter = false,
  ) {
    super();
  }
  get dtype(): TorchDtype {
    return this.storage.dtype;
  }
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  /** Row-major with no gaps (size-1 dimensions may have any stride, as in PyTorch). */
  get isContiguous(): boolean {
    let expected = 1;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      if (this.shape[d] === 1) continue;
      if (this.stride[d] !== expected) return false;
      expected *= this.shape[d]!;
    }
    return true;
  }
}

function securityHint(q: string): string {
  if (q.startsWith('torch.nn.') || q.startsWith('__main__.')) {
    return 'a whole module object was pickled (torch.save(model)); save model.state_dict() instead';
  }
  if (q === 'torch.storage._load_from_bytes') return 'legacy storage pickling, which runs a nested torch.load';
  return 'a state dict needs only tensors, storages and OrderedDict; torch.load would have run this';
}

function int(v: PyValue, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new Error(`${what} must be a non-negative integer, got ${describe(v)}`);
  return v;
}

function intTuple(v: PyValue, what: string): number[] {
  if (!(v instanceof PyTuple)) throw new Error(`${what} must be a tuple, got ${describe(v)}`);
  return v.items.map((x, i) => int(x, `${what}[${i}]`));
}

function emptyState(v: PyValue): boolean {
  if (v === null) return true;
  if (v instanceof PyDict) return v.map.size === 0;
  if (v instanceof PyTuple) return v.items.every(emptyState);
  return false;
}

function rebuildTensorV2(args: readonly PyValue[]): TorchTensor {
  if (args.length !== 6 && args.length !== 7) throw new Error(`expected 6 or 7 arguments, got ${args.length}`);
  const [storage, offset, size, stride, requiresGrad, hooks, metadata] = args;
  if (!(storage instanceof TorchStorage)) throw new Error(`storage argument is ${describe(storage)}`);
  const off = int(offset!, 'storage offset');
  const shape = intTuple(size!, 'size');
  const strides = intTuple(stride!, 'stride');
  if (shape.length !== strides.length) throw new Error(`size has ${shape.length} dimensions, stride ${strides.length}`);
  if (typeof requiresGrad !== 'boolean') throw new Error(`requires_grad is ${describe(requiresGrad)}`);
  if (!(hooks instanceof PyDict)) throw new Error(`backward_hooks is ${describe(hooks)}`);
  if (metadata !== undefined && !emptyState(metadata)) throw new Error('tensor metadata is not supported');
  if (!Number.isSafeInteger(shape.reduce((a, b) => a * b, 1))) throw new Error(`size [${shape}] is too large`);
  if (shape.every((d) => d > 0)) {
    const last = off + shape.reduce((s, d, i) => s + (d - 1) * strides[i]!, 0);
    if (last >= storage.numel) {
      throw new Error(`view [${shape}] stride [${strides}] at offset ${off} reaches element ${last} of a ${storage.numel}-element storage`);
    }
  }
  return new TorchTensor(storage, off, shape, strides, requiresGrad);
}

function rebuildParameter(args: readonly PyValue[]): TorchTensor {
  if (args.length !== 3) throw new Error(`expected 3 arguments, got ${args.length}`);
  const [data, requiresGrad] = args;
  if (!(data instanceof TorchTensor)) throw new Error(`data is ${describe(data)}`);
  if (typeof requiresGrad !== 'boolean') throw new Error(`requires_grad is ${describe(requiresGrad)}`);
  return new TorchTensor(data.storage, data.storageOffset, data.shape, data.stride, requiresGrad, true);
}

const TENSOR_TYPES = new Set(['torch.Tensor', 'torch.nn.parameter.Parameter']);

function rebuildFromTypeV2(args: readonly PyValue[]): PyValue {
  if (args.length !== 4) throw new Error(`expected 4 arguments, got ${args.length}`);
  const [func, newType, fargs, state] = args;
  if (!(func instanceof PyCallable)) throw new Error(`func is ${describe(func)}`);
  if (!(newType instanceof PyGlobal) || !TENSOR_TYPES.has(newType.qualname)) throw new Error(`type ${describe(newType)} is not a plain tensor type`);
  if (!(fargs instanceof PyTuple)) throw new Error(`args is ${describe(fargs)}`);
  if (!emptyState(state!)) throw new Error('tensor subclass state is not supported');
  return func.fn(fargs.items);
}

/**
 * The complete allow-list: what each name may resolve to. Storage classes and tensor types are
 * inert tags; the three rebuild functions and OrderedDict are TypeScript.
 */
export const TORCH_GLOBALS: ReadonlyMap<string, PyValue> = new Map<string, PyValue>([
  [
    'collections.OrderedDict',
    new PyCallable('collections.OrderedDict', (args) => {
      if (args.length !== 0) throw new Error('only OrderedDict() with no arguments is supported');
      return new PyDict('collections.OrderedDict');
    }),
  ],
  ['torch._utils._rebuild_tensor_v2', new PyCallable('torch._utils._rebuild_tensor_v2', rebuildTensorV2)],
  ['torch._utils._rebuild_parameter', new PyCallable('torch._utils._rebuild_parameter', rebuildParameter)],
  ['torch._tensor._rebuild_from_type_v2', new PyCallable('torch._tensor._rebuild_from_type_v2', rebuildFromTypeV2)],
  ...[...TENSOR_TYPES].map((q): [string, PyValue] => [q, new PyGlobal(q)]),
  ...[...STORAGE_TYPES.keys()].map((q): [string, PyValue] => [q, new PyGlobal(q)]),
]);

export interface TorchFileInfo {
  /** The folder inside the archive ("archive", or the file's stem for torch 1.x). */
  prefix: string;
  version: string | null;
  byteOrder: 'little' | 'big';
}

let halfTable: Float32Array | null = null;

function halfToFloat(h: number): number {
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function halfLookup(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) halfTable[i] = halfToFloat(i);
  }
  return halfTable;
}

/** `count` elements of `dtype` starting at element `start` of `bytes`, as float32. */
export function decodeElements(bytes: Uint8Array, dtype: TorchDtype, start: number, count: number, bigEndian = false): Float32Array {
  const size = ITEM_SIZE[dtype];
  const begin = bytes.byteOffset + start * size;
  if ((start + count) * size > bytes.byteLength) throw new RangeError(`elements ${start}..${start + count} exceed ${bytes.byteLength} bytes`);
  const out = new Float32Array(count);
  const le = !bigEndian;
  if (dtype === 'float32' && le) {
    new Uint8Array(out.buffer).set(bytes.subarray(start * 4, (start + count) * 4));
    return out;
  }
  const dv = new DataView(bytes.buffer, begin, count * size);
  switch (dtype) {
    case 'float32':
      for (let i = 0; i < count; i++) out[i] = dv.getFloat32(4 * i, le);
      break;
    case 'float16': {
      const t = halfLookup();
      for (let i = 0; i < count; i++) out[i] = t[dv.getUint16(2 * i, le)]!;
      break;
    }
    case 'bfloat16': {
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) u[i] = dv.getUint16(2 * i, le) << 16;
      break;
    }
    case 'float64':
      for (let i = 0; i < count; i++) out[i] = dv.getFloat64(8 * i, le);
      break;
    case 'int64':
      for (let i = 0; i < count; i++) out[i] = Number(dv.getBigInt64(8 * i, le));
      break;
    case 'int32':
      for (let i = 0; i < count; i++) out[i] = dv.getInt32(4 * i, le);
      break;
    case 'uint8':
      for (let i = 0; i < count; i++) out[i] = dv.getUint8(i);
      break;
    case 'bool':
      for (let i = 0; i < count; i++) out[i] = dv.getUint8(i) ? 1 : 0;
      break;
  }
  return out;
}

/**
 * Row-major copy of the strided view (shape, stride) of `src` starting at element `base`:
 * contiguous views are one slice, transposed and sliced ones are gathered.
 */
export function gatherStrided(src: Float32Array, base: number, shape: readonly number[], stride: readonly number[]): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  if (n === 0) return out;
  const rank = shape.length;
  if (rank === 0) {
    out[0] = src[base]!;
    return out;
  }
  const idx = new Array<number>(rank).fill(0);
  const inner = shape[rank - 1]!;
  const innerStride = stride[rank - 1]!;
  let o = 0;
  let pos = base;
  for (;;) {
    if (innerStride === 1) {
      out.set(src.subarray(pos, pos + inner), o);
      o += inner;
    } else {
      for (let j = 0, p = pos; j < inner; j++, p += innerStride) out[o++] = src[p]!;
    }
    // Odometer over the outer dimensions.
    let d = rank - 2;
    for (; d >= 0; d--) {
      idx[d]!++;
      pos += stride[d]!;
      if (idx[d]! < shape[d]!) break;
      pos -= stride[d]! * shape[d]!;
      idx[d] = 0;
    }
    if (d < 0) return out;
  }
}

/** An opened torch.save file: the unpickled object graph plus access to tensor data. */
export class TorchFile {
  private cached: { key: string; bytes: Buffer } | null = null;

  private constructor(
    readonly path: string,
    private readonly zip: ZipArchive,
    readonly info: TorchFileInfo,
    readonly root: PyValue,
    readonly storages: ReadonlyMap<string, TorchStorage>,
  ) {}

  static open(path: string): TorchFile {
    let source: ByteSource;
    try {
      source = fileSource(path);
    } catch (e) {
      throw new TorchFileError(path, `cannot open: ${(e as Error).message}`, { cause: e });
    }
    return TorchFile.fromSource(source, path);
  }

  static fromBuffer(buf: Uint8Array, where = 'buffer'): TorchFile {
    return TorchFile.fromSource(bufferSource(buf), where);
  }

  static fromSource(source: ByteSource, where: string): TorchFile {
    try {
      return TorchFile.parse(source, where);
    } catch (e) {
      source.close();
      throw e;
    }
  }

  private static parse(source: ByteSource, where: string): TorchFile {
    let zip: ZipArchive;
    try {
      zip = ZipArchive.open(source, where);
    } catch (e) {
      const head = source.size >= 2 ? source.read(0, 2) : Buffer.alloc(0);
      if (e instanceof ZipError && head[0] === 0x80 && head[1]! <= 5) {
        throw new TorchFileError(
          where,
          'this is the legacy (pre-1.6, _use_new_zipfile_serialization=False) torch.save format, which is not supported: load and re-save it with a current PyTorch',
          { cause: e },
        );
      }
      throw e;
    }
    const names = [...zip.entries.keys()];
    const pkls = names.filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkls.length !== 1) {
      const ts = names.some((n) => /^[^/]+\/(constants\.pkl|code\/)/.test(n));
      throw new TorchFileError(
        where,
        ts
          ? 'this is a TorchScript archive (torch.jit.save), not a torch.save file; save the state dict with torch.save instead'
          : pkls.length === 0
            ? 'no <name>/data.pkl in the archive: not a torch.save file'
            : `several data.pkl records: ${pkls.join(', ')}`,
      );
    }
    const prefix = pkls[0]!.slice(0, -'/data.pkl'.length);
    const text = (name: string): string | null => (zip.has(name) ? zip.read(name).toString('utf8').trim() : null);
    const order = text(`${prefix}/byteorder`);
    if (order !== null && order !== 'little' && order !== 'big') throw new TorchFileError(where, `byteorder record says ${JSON.stringify(order)}`);
    const info: TorchFileInfo = {
      prefix,
      version: text(`${prefix}/version`) ?? text(`${prefix}/.data/version`),
      byteOrder: order === 'big' ? 'big' : 'little',
    };

    const storages = new Map<string, TorchStorage>();
    const persistentLoad = (pid: PyValue): PyValue => {
      if (!(pid instanceof PyTuple) || pid.items.length !== 5 || pid.items[0] !== 'storage') {
        throw new Error(`expected ('storage', type, key, location, numel), got ${describe(pid)}`);
      }
      const [, type, key, location, numel] = pid.items;
      if (!(type instanceof PyGlobal) || !STORAGE_TYPES.has(type.qualname)) throw new Error(`storage type is ${describe(type)}`);
      if (typeof key !== 'string' || typeof location !== 'string') throw new Error('storage key and location must be strings');
      const n = int(numel!, 'storage numel');
      const dtype = STORAGE_TYPES.get(type.qualname)!;
      const seen = storages.get(key);
      if (seen) {
        if (seen.dtype !== dtype || seen.numel !== n) throw new Error(`storage ${key} is used as ${seen.dtype}[${seen.numel}] and ${dtype}[${n}]`);
        return seen;
      }
      const entry = `${prefix}/data/${key}`;
      if (!zip.has(entry)) throw new Error(`storage ${key} has no ${entry} in the archive`);
      const bytes = zip.entry(entry).size;
      if (bytes !== n * ITEM_SIZE[dtype]) throw new Error(`${entry} has ${bytes} bytes, ${dtype}[${n}] needs ${n * ITEM_SIZE[dtype]}`);
      const s = new TorchStorage(key, dtype, n, location);
      storages.set(key, s);
      return s;
    };
    let root: PyValue;
    try {
      root = unpickle(zip.read(pkls[0]!), { globals: TORCH_GLOBALS, persistentLoad, securityHint });
    } catch (e) {
      if (e instanceof PickleError) e.message = `${where}: ${e.message}`;
      throw e;
    }
    return new TorchFile(where, zip, info, root, storages);
  }

  /** The tensor's values in row-major order, converted to float32. */
  readFloat32(t: TorchTensor): Float32Array {
    const { storage } = t;
    if (!this.cached || this.cached.key !== storage.key) {
      // One storage kept: consecutive views of one storage (tied or sliced weights) read it once.
      this.cached = null;
      this.cached = { key: storage.key, bytes: this.zip.read(`${this.info.prefix}/data/${storage.key}`) };
    }
    const bytes = this.cached.bytes;
    const big = this.info.byteOrder === 'big';
    if (t.numel === 0) return new Float32Array(0);
    if (t.isContiguous) return decodeElements(bytes, storage.dtype, t.storageOffset, t.numel, big);
    // Decode the span the view touches, then gather.
    const span = 1 + t.shape.reduce((s, d, i) => s + (d - 1) * t.stride[i]!, 0);
    const src = decodeElements(bytes, storage.dtype, t.storageOffset, span, big);
    return gatherStrided(src, 0, t.shape, t.stride);
  }

  close(): void {
    this.cached = null;
    this.zip.close();
  }
}
