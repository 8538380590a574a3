// The wasm backend's BatchMatMul and _FusedMatMul computed by a native CBLAS in place on the wasm
// heap: operands are read where tfjs keeps them, the product is written straight into the output
// tensor, and transposes are sgemm's flags (no transposed copy is ever made). Batched products loop
// over the broadcast batch; a product with one output row or column (the bias gradient, written as
// ones x dY) goes to sgemv, ~5x faster than sgemm for that shape. The fused kernel's rank-1 bias
// is copied into the output rows first and sgemm adds the product with beta = 1 (measured: free,
// where a separate pass over the output costs ~20% of a 1024x512x2048 product); any other bias
// and every activation go through the wasm backend's own kernels, so their semantics are tfjs's.
import * as tf from '@tensorflow/tfjs';
import type { TensorInfoLike, WasmBackendInternals } from '../host-memory.ts';
import type { Cblas } from './cblas.ts';

type KernelArgs = Parameters<tf.KernelFunc>[0];

export class BlasKernelError extends Error {
  override readonly name = 'BlasKernelError';
  constructor(
    readonly kernel: string,
    reason: string,
  ) {
    super(`${kernel} (BLAS): ${reason}`);
  }
}

function sizeOf(shape: readonly number[]): number {
  let s = 1;
  for (const d of shape) s *= d;
  return s;
}

function offsetOf(backend: WasmBackendInternals, t: TensorInfoLike, kernel: string): number {
  const entry = backend.dataIdMap.get(t.dataId);
  if (!entry) throw new BlasKernelError(kernel, 'tensor has no data on the wasm backend');
  return entry.memoryOffset >>> 2;
}

/** Row-major strides of `shape` with 0 on axes of size 1, so broadcast indexing is a dot product. */
function broadcastStrides(shape: readonly number[], rank: number): number[] {
  const padded = [...Array<number>(rank - shape.length).fill(1), ...shape];
  const strides = new Array<number>(rank).fill(0);
  let s = 1;
  for (let i = rank - 1; i >= 0; i--) {
    strides[i] = padded[i] === 1 ? 0 : s;
    s *= padded[i]!;
  }
  return strides;
}

/**
 * out = op(a) op(b) (+ bias copied into every output row first), batch dims broadcast as tfjs
 * does. `bias` is a rank-1 tensor of length n or 1, or null.
 */
function product(
  blas: Cblas,
  backend: WasmBackendInternals,
  kernel: string,
  a: TensorInfoLike,
  b: TensorInfoLike,
  transA: boolean,
  transB: boolean,
  bias: TensorInfoLike | null,
): TensorInfoLike {
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2) throw new BlasKernelError(kernel, `operands need rank >= 2, got [${a.shape}] and [${b.shape}]`);
  const m = transA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
  const k = transA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
  const kb = transB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
  const n = transB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
  if (k !== kb) throw new BlasKernelError(kernel, `inner dimensions differ: [${a.shape}] x [${b.shape}] (transposeA ${transA}, transposeB ${transB})`);
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const batchShape = tf.broadcast_util.assertAndGetBroadcastShape(batchA, batchB);
  const out = backend.makeOutput([...batchShape, m, n], 'float32');
  const batches = sizeOf(batchShape);
  if (batches === 0 || m === 0 || n === 0) return out;
  // makeOutput may grow the wasm memory, which replaces HEAPF32: every view is taken from here on.
  const heap = backend.wasm.HEAPF32;
  const ao = offsetOf(backend, a, kernel);
  const bo = offsetOf(backend, b, kernel);
  const co = offsetOf(backend, out, kernel);
  const total = batches * m * n;
  let beta = 0;
  if (bias) {
    const bi = offsetOf(backend, bias, kernel);
    if (sizeOf(bias.shape) === 1) heap.fill(heap[bi]!, co, co + total);
    else {
      heap.copyWithin(co, bi, bi + n);
      for (let r = 1; r < batches * m; r++) heap.copyWithin(co + r * n, co, co + n);
    }
    beta = 1;
  }
  if (k === 0) {
    if (!bias) heap.fill(0, co, co + total);
    return out;
  }
  const lda = transA ? m : k;
  const ldb = transB ? k : n;
  const rank = batchShape.length;
  const sa = broadcastStrides(batchA, rank);
  const sb = broadcastStrides(batchB, rank);
  const index = new Array<number>(rank).fill(0);
  for (let i = 0; i < batches; i++) {
    let ia = 0;
    let ib = 0;
    for (let d = 0; d < rank; d++) {
      ia += index[d]! * sa[d]!;
      ib += index[d]! * sb[d]!;
    }
    const ap = ao + ia * m * k;
    const bp = bo + ib * k * n;
    const cp = co + i * m * n;
    if (m === 1) {
      // One output row: c = op(B)^T a, the vector a contiguous whatever transA (it is 1 x k or k x 1).
      if (transB) blas.sgemv(heap, false, n, k, 1, bp, ldb, ap, 1, beta, cp, 1);
      else blas.sgemv(heap, true, k, n, 1, bp, ldb, ap, 1, beta, cp, 1);
    } else if (n === 1) {
      // One output column: c = op(A) b, b contiguous whatever transB.
      if (transA) blas.sgemv(heap, true, k, m, 1, ap, lda, bp, 1, beta, cp, 1);
      else blas.sgemv(heap, false, m, k, 1, ap, lda, bp, 1, beta, cp, 1);
    } else {
      blas.sgemm(heap, transA, transB, m, n, k, 1, ap, lda, bp, ldb, beta, cp, n);
    }
    for (let d = rank - 1; d >= 0; d--) {
      if (++index[d]! < batchShape[d]!) break;
      index[d] = 0;
    }
  }
  return out;
}

function float32(kernel: string, ...ts: (TensorInfoLike | null | undefined)[]): void {
  for (const t of ts) if (t && t.dtype !== 'float32') throw new BlasKernelError(kernel, `float32 tensors only, got ${t.dtype}`);
}

/** The BatchMatMul kernel on BLAS. */
export function blasBatchMatMul(blas: Cblas, args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as unknown as WasmBackendInternals;
  const a = args.inputs['a']!;
  const b = args.inputs['b']!;
  float32('BatchMatMul', a, b);
  const attrs = args.attrs ?? {};
  return product(blas, backend, 'BatchMatMul', a, b, attrs['transposeA'] === true, attrs['transposeB'] === true, null) as tf.TensorInfo;
}

/** Activation name of _FusedMatMul -> the wasm kernel that applies it. */
const ACTIVATION_KERNELS: Record<string, string> = {
  relu: 'Relu',
  relu6: 'Relu6',
  elu: 'Elu',
  sigmoid: 'Sigmoid',
  leakyrelu: 'LeakyRelu',
  prelu: 'Prelu',
};

/** Runs a wasm kernel on `x`, frees `x`, returns the kernel's output. */
function thenKernel(
  backend: WasmBackendInternals,
  name: string,
  x: TensorInfoLike,
  inputs: Record<string, TensorInfoLike>,
  attrs: tf.NamedAttrMap,
): TensorInfoLike {
  const config = tf.getKernel(name, 'wasm');
  if (!config) throw new BlasKernelError('_FusedMatMul', `wasm kernel ${name} is not registered`);
  const y = config.kernelFunc({ inputs: { ...inputs } as tf.NamedTensorInfoMap, backend: backend as unknown as tf.KernelBackend, attrs }) as TensorInfoLike;
  backend.disposeData(x.dataId);
  return y;
}

/** The _FusedMatMul kernel on BLAS: product, bias, then activation. */
export function blasFusedMatMul(blas: Cblas, args: KernelArgs): tf.TensorInfo {
  const backend = args.backend as unknown as WasmBackendInternals;
  const { a, b, bias, preluActivationWeights: prelu } = args.inputs as Record<string, TensorInfoLike | null | undefined>;
  float32('_FusedMatMul', a, b, bias, prelu);
  const attrs = args.attrs ?? {};
  const activation = (attrs['activation'] as string | undefined) ?? 'linear';
  if (activation !== 'linear' && !(activation in ACTIVATION_KERNELS)) throw new BlasKernelError('_FusedMatMul', `activation ${activation} is not supported`);
  const transB = attrs['transposeB'] === true;
  const cols = transB ? b!.shape[b!.shape.length - 2] : b!.shape[b!.shape.length - 1];
  // A [n] or [1] bias rides in sgemm (beta = 1); any other broadcastable shape is added after.
  const inSgemm = bias != null && bias.shape.length === 1 && (bias.shape[0] === cols || bias.shape[0] === 1);
  const out = product(blas, backend, '_FusedMatMul', a!, b!, attrs['transposeA'] === true, transB, inSgemm ? bias : null);
  let y = out;
  if (bias != null && !inSgemm) {
    y = thenKernel(backend, 'Add', y, { a: y, b: bias }, {});
  }
  if (activation !== 'linear') {
    const name = ACTIVATION_KERNELS[activation]!;
    if (name === 'Prelu') {
      if (!prelu) throw new BlasKernelError('_FusedMatMul', 'prelu activation without preluActivationWeights');
      y = thenKernel(backend, name, y, { x: y, alpha: prelu }, {});
    } else {
      y = thenKernel(backend, name, y, { x: y }, name === 'LeakyRelu' ? { alpha: (attrs['leakyreluAlpha'] as number | undefined) ?? 0.2 } : {});
    }
  }
  return y as tf.TensorInfo;
}
