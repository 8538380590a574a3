// Direct views of tensor memory on the two backends that keep it in this process: cpu (a JS
// typed array per tensor) and wasm (a slice of the wasm heap). Kernels written in JS use these
// to read inputs and fill outputs in one pass, without the copies dataSync()/tf.tensor() make.

/** The parts of tfjs-backend-wasm's BackendWasm used here. */
export interface WasmBackendInternals {
  wasm: { HEAPF32: Float32Array };
  dataIdMap: { get(dataId: object): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: 'float32'): TensorInfoLike;
  disposeData(dataId: object, force?: boolean): boolean;
}

/** The parts of tfjs-backend-cpu's MathBackendCPU used here. */
export interface CpuBackendInternals {
  data: { get(dataId: object): { values?: unknown } | undefined };
  makeTensorInfo(shape: number[], dtype: 'float32', values: Float32Array): TensorInfoLike;
}

export interface TensorInfoLike {
  dataId: object;
  shape: number[];
  dtype: string;
}

export type HostBackendName = 'cpu' | 'wasm';

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Allocates float32 outputs of the given shapes, then calls `body` with views of the inputs and
 * outputs. On wasm the views are taken after every allocation (allocating may grow the heap and
 * detach older views) and must not be kept past `body`.
 */
export function withHostViews(
  backendName: HostBackendName,
  backend: object,
  inputs: readonly TensorInfoLike[],
  outShapes: readonly number[][],
  body: (ins: Float32Array[], outs: Float32Array[]) => void,
): TensorInfoLike[] {
  for (const t of inputs) if (t.dtype !== 'float32') throw new TypeError(`host kernel: float32 inputs only, got ${t.dtype}`);
  if (backendName === 'wasm') {
    const b = backend as WasmBackendInternals;
    const outs = outShapes.map((s) => b.makeOutput([...s], 'float32'));
    const view = (t: TensorInfoLike): Float32Array => {
      const e = b.dataIdMap.get(t.dataId);
      if (!e) throw new Error('host kernel: tensor has no data on the wasm backend');
      const off = e.memoryOffset >>> 2;
      return b.wasm.HEAPF32.subarray(off, off + size(t.shape));
    };
    body(inputs.map(view), outs.map(view));
    return outs;
  }
  const b = backend as CpuBackendInternals;
  const outArrays = outShapes.map((s) => new Float32Array(size(s)));
  const ins = inputs.map((t) => {
    const v = b.data.get(t.dataId)?.values;
    if (!(v instanceof Float32Array)) throw new Error('host kernel: cpu tensor values are not a Float32Array');
    return v;
  });
  body(ins, outArrays);
  return outShapes.map((s, i) => b.makeTensorInfo([...s], 'float32', outArrays[i]!));
}
