// Kernel overrides that let training on the wasm backend run at XNNPACK's matMul speed.
//
// The wasm backend sends only untransposed matMuls to XNNPACK; with transposeA or transposeB it
// falls back to a naive loop 10-40x slower. A dense layer's backward pass is made of exactly those
// products (dX = dY W^T, dW = X^T dY), so an MLP trained ~15x below matMul speed. BatchMatMul
// and _FusedMatMul are wrapped to transpose the operand explicitly, then call the original kernel
// untransposed: the same products summed in the same order, so results are bit-identical (tested).
// The explicit transposes then became visible in profiles (the wasm Transpose kernel manages
// ~8 ns per element), so 2-D float32 Transpose is replaced by a cache-blocked JS loop over the
// wasm heap (~3-4x faster; pure data movement, identical output).
// Where a native CBLAS is found (src/train/blas/), both matMul kernels go to it instead, in place
// on the wasm heap with transposes as flags: XNNPACK in wasm tops out at 128-bit SIMD without FMA
// on one thread, OpenBLAS runs at native speed on several. The XNNPACK route stays for machines
// without the library and for A/B comparisons (setMatMulRoute, SMLP_BLAS=off).
import * as tf from '@tensorflow/tfjs';
import { blasBatchMatMul, blasFusedMatMul } from './blas/blas-kernels.ts';
import { BlasUnavailableError, defaultBlasThreads, describeCblas, systemCblas, type BlasLookup, type Cblas } from './blas/cblas.ts';
import type { TensorInfoLike, WasmBackendInternals as WasmBackend } from './host-memory.ts';

type KernelArgs = Parameters<tf.KernelFunc>[0];

const originals = new Map<string, tf.KernelConfig>();

function offsetOf(backend: WasmBackend, t: TensorInfoLike): number {
  const entry = backend.dataIdMap.get(t.dataId);
  if (!entry) throw new Error('wasm kernel override: tensor has no data on the wasm backend');
  return entry.memoryOffset >>> 2;
}

/** [rows, cols] -> [cols, rows], in 8x8 tiles so reads and writes both stay cache-resident. */
function transposeHeap(heap: Float32Array, src: number, dst: number, rows: number, cols: number): void {
  const B = 8;
  for (let c0 = 0; c0 < cols; c0 += B) {
    const c1 = Math.min(cols, c0 + B);
    for (let r0 = 0; r0 < rows; r0 += B) {
      const r1 = Math.min(rows, r0 + B);
      for (let c = c0; c < c1; c++) {
        const d = dst + c * rows;
        for (let r = r0; r < r1; r++) heap[d + r] = heap[src + r * cols + c]!;
      }
    }
  }
}

function transposeKernel(original: tf.KernelConfig): tf.KernelFunc {
  return (args: KernelArgs) => {
    const x = args.inputs['x']!;
    const perm = args.attrs?.['perm'] as number[] | undefined;
    const is2d = x.shape.length === 2 && perm?.[0] === 1 && perm[1] === 0;
    if (!is2d || x.dtype !== 'float32') return original.kernelFunc(args);
    const backend = args.backend as WasmBackend;
    const [rows, cols] = x.shape as [number, number];
    const out = backend.makeOutput([cols, rows], 'float32');
    // makeOutput may grow the wasm memory, which replaces HEAPF32: read it afterwards.
    transposeHeap(backend.wasm.HEAPF32, offsetOf(backend, x), offsetOf(backend, out), rows, cols);
    return out as tf.TensorInfo;
  };
}

function swapLastTwo(x: tf.TensorInfo, backend: WasmBackend): tf.TensorInfo {
  const rank = x.shape.length;
  const perm = [...Array(rank).keys()];
  perm[rank - 1] = rank - 2;
  perm[rank - 2] = rank - 1;
  return tf.getKernel('Transpose', 'wasm').kernelFunc({ inputs: { x }, backend, attrs: { perm } }) as tf.TensorInfo;
}

export type MatMulRoute = 'blas' | 'xnnpack';

let lookup: BlasLookup | null = null;
let route: MatMulRoute = 'xnnpack';

function matMulKernel(original: tf.KernelConfig, onBlas: (blas: Cblas, args: KernelArgs) => tf.TensorInfo): tf.KernelFunc {
  return (args: KernelArgs) => {
    if (route === 'blas' && lookup?.ok) return onBlas(lookup.blas, args);
    const attrs = args.attrs ?? {};
    const transposeA = attrs['transposeA'] === true;
    const transposeB = attrs['transposeB'] === true;
    if (!transposeA && !transposeB) return original.kernelFunc(args);
    const backend = args.backend as WasmBackend;
    const a = args.inputs['a']!;
    const b = args.inputs['b']!;
    const ta = transposeA ? swapLastTwo(a, backend) : a;
    const tb = transposeB ? swapLastTwo(b, backend) : b;
    try {
      return original.kernelFunc({
        ...args,
        inputs: { ...args.inputs, a: ta, b: tb },
        attrs: { ...attrs, transposeA: false, transposeB: false },
      });
    } finally {
      if (ta !== a) backend.disposeData(ta.dataId);
      if (tb !== b) backend.disposeData(tb.dataId);
    }
  };
}

const OVERRIDES: Record<string, (original: tf.KernelConfig) => tf.KernelFunc> = {
  Transpose: transposeKernel,
  BatchMatMul: (o) => matMulKernel(o, blasBatchMatMul),
  _FusedMatMul: (o) => matMulKernel(o, blasFusedMatMul),
};

export interface WasmKernelSettings {
  /** BLAS threads (default: every core). */
  threads?: number;
  /** The BLAS lookup to use instead of the system's (tests inject a missing library). */
  blas?: BlasLookup;
}

/**
 * Installs the overrides on the wasm backend (idempotent) and routes matMuls to BLAS when one is
 * found, XNNPACK otherwise. Returns the line that says which. The wasm backend module must be loaded.
 */
export function installWasmKernels(settings: WasmKernelSettings = {}): string {
  for (const [name, make] of Object.entries(OVERRIDES)) {
    if (originals.has(name)) continue;
    const original = tf.getKernel(name, 'wasm');
    if (!original) throw new Error(`installWasmKernels: kernel ${name} is not registered for wasm`);
    originals.set(name, original);
    tf.unregisterKernel(name, 'wasm');
    // setupFunc stays: it binds the wasm export that the original kernelFunc calls.
    tf.registerKernel({ ...original, kernelFunc: make(original) });
  }
  lookup = settings.blas ?? systemCblas();
  if (lookup.ok) {
    lookup.blas.setThreads(settings.threads ?? defaultBlasThreads());
    route = 'blas';
  } else {
    route = 'xnnpack';
  }
  return wasmMatMulNote();
}

/** Switches the matMul route (A/B comparisons); 'blas' needs a library to have been found. */
export function setMatMulRoute(r: MatMulRoute): void {
  if (r === 'blas' && !lookup?.ok) throw new BlasUnavailableError(lookup && !lookup.ok ? lookup.reason : 'the wasm kernels are not installed');
  route = r;
}

export function matMulRoute(): MatMulRoute {
  return route;
}

/** The BLAS the matMuls go to now, or null (XNNPACK). */
export function activeBlas(): Cblas | null {
  return route === 'blas' && lookup?.ok ? lookup.blas : null;
}

/** "wasm + OpenBLAS 0.3.21, 2 threads" or "wasm (XNNPACK): <why not BLAS>". */
export function wasmMatMulNote(): string {
  const blas = activeBlas();
  if (blas) return `wasm + ${describeCblas(blas)}`;
  if (lookup && !lookup.ok) return `wasm (XNNPACK): ${lookup.reason}`;
  return 'wasm (XNNPACK): BLAS route switched off';
}

/** Restores the stock kernels (to measure the difference, and in tests). */
export function uninstallWasmKernels(): void {
  for (const [name, original] of originals) {
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel(original);
  }
  originals.clear();
}

export function wasmKernelsInstalled(): boolean {
  return originals.size > 0;
}
