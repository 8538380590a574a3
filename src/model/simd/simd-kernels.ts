// GELU (value and derivative in one pass) and the AdamW and Lion updates as WebAssembly SIMD
// kernels that run in place on the tfjs wasm backend's heap (kernels.c, compiled by build.sh to the
// committed kernels.wasm). With matMuls on a native BLAS, the element-wise work became a third of
// a training step: as tf ops GELU is ~10 passes over the widest activations (Erf and Exp are
// scalar loops in tfjs-wasm, ~9-14 ns an element) and AdamW ~12 passes over the parameters; here
// each is one pass. The module imports tfjs's own WebAssembly.Memory, so arguments are the
// tensors' byte offsets; it has no data section and no stack (checked here before instantiating),
// so it writes nothing but the outputs it is given. Other backends, a runtime without SIMD, or
// setSimdKernels(false) / SMLP_SIMD=off leave the previous versions in place.
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';

// lib.dom (which declares WebAssembly) is not loaded by this project's tsconfig.
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmModule {
  readonly __brand?: 'WebAssembly.Module';
}
interface WasmApi {
  Module: { new (bytes: Uint8Array): WasmModule; imports(m: WasmModule): Array<{ module: string; name: string; kind: string }> };
  Instance: new (module: WasmModule, imports: object) => { exports: unknown };
}
const WebAssembly = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

export interface Exports {
  gelu(x: number, y: number, d: number, n: number): void;
  adamw(
    p: number,
    m: number,
    v: number,
    g: number,
    p1: number,
    m1: number,
    v1: number,
    n: number,
    b1: number,
    c1: number,
    b2: number,
    c2: number,
    sbc2: number,
    eps: number,
    decay: number,
    step: number,
  ): void;
  lion(p: number, m: number, g: number, p1: number, m1: number, n: number, b1: number, c1: number, b2: number, c2: number, decay: number, lr: number): void;
}

/** The parts of tfjs-backend-wasm's BackendWasm used here. */
interface WasmBackend {
  wasm?: { asm?: { memory?: WasmMemory } };
  dataIdMap: { get(dataId: object): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: 'float32'): tf.TensorInfo;
}

export class SimdKernelError extends Error {
  override readonly name = 'SimdKernelError';
  constructor(
    readonly what: string,
    reason: string,
  ) {
    super(`${what}: ${reason}`);
  }
}

const WASM_URL = new URL('./kernels.wasm', import.meta.url);
const DATA_SECTION = 11;
const DATA_COUNT_SECTION = 12;

/** Section ids of a wasm binary, to refuse one that would initialise memory it does not own. */
export function wasmSectionIds(bytes: Uint8Array): number[] {
  const ids: number[] = [];
  let i = 8;
  while (i < bytes.length) {
    const id = bytes[i++]!;
    let size = 0;
    let shift = 0;
    for (;;) {
      const b = bytes[i++]!;
      size |= (b & 0x7f) << shift;
      if (!(b & 0x80)) break;
      shift += 7;
    }
    ids.push(id);
    i += size;
  }
  return ids;
}

let compiled: WasmModule | null | undefined;

/** The compiled module, or null where this runtime cannot compile it (no SIMD). Cached. */
export function simdModule(): WasmModule | null {
  if (compiled === undefined) {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(WASM_URL);
      compiled = new WebAssembly.Module(bytes);
    } catch {
      compiled = null;
      return compiled;
    }
    const ids = wasmSectionIds(bytes);
    const imports = WebAssembly.Module.imports(compiled);
    if (ids.includes(DATA_SECTION) || ids.includes(DATA_COUNT_SECTION) || imports.length !== 1 || imports[0]!.kind !== 'memory') {
      throw new SimdKernelError(WASM_URL.pathname, 'must import only a memory and carry no data section (rebuild with build.sh)');
    }
  }
  return compiled;
}

/** Instantiates the kernels on `memory` (tfjs's, or any other for tests). */
export function instantiateSimd(memory: WasmMemory): Exports {
  const module = simdModule();
  if (!module) throw new SimdKernelError('simd kernels', 'this runtime cannot compile WebAssembly SIMD');
  return new WebAssembly.Instance(module, { env: { memory } }).exports as Exports;
}

const instances = new WeakMap<WasmMemory, Exports | null>();

/** The kernels bound to this backend's memory, or null where they cannot be (cached either way). */
function exportsOrNull(backend: WasmBackend): Exports | null {
  const memory = backend.wasm?.asm?.memory;
  if (!memory) return null;
  let e = instances.get(memory);
  if (e === undefined) {
    try {
      e = instantiateSimd(memory);
    } catch {
      // e.g. a shared memory (tfjs's threaded build), which this module's import does not declare.
      e = null;
    }
    instances.set(memory, e);
  }
  return e;
}

function exportsFor(backend: WasmBackend): Exports {
  const e = exportsOrNull(backend);
  if (!e) throw new SimdKernelError('simd kernels', "cannot be instantiated on this backend's memory");
  return e;
}

function offset(backend: WasmBackend, t: tf.TensorInfo, what: string): number {
  const entry = backend.dataIdMap.get(t.dataId);
  if (!entry) throw new SimdKernelError(what, 'tensor has no data on the wasm backend');
  return entry.memoryOffset;
}

function float32(what: string, ts: tf.TensorInfo[]): void {
  for (const t of ts) if (t.dtype !== 'float32') throw new SimdKernelError(what, `float32 tensors only, got ${t.dtype}`);
}

export const GELU_KERNEL = 'SmlpGeluSimd';
export const ADAMW_KERNEL = 'SmlpAdamWSimd';
export const LION_KERNEL = 'SmlpLionSimd';

export interface LionAttrs {
  lr: number;
  wd: number;
  b1: number;
  b2: number;
}

export interface AdamWAttrs {
  b1: number;
  b2: number;
  eps: number;
  lr: number;
  wd: number;
  /** 1-based update count, for the bias corrections. */
  step: number;
}

let registered = false;
// SMLP_SIMD=off starts with them off (A/B runs of whole commands).
let enabled = !['off', '0', 'false', 'no'].includes((process.env['SMLP_SIMD'] ?? '').trim().toLowerCase());

function register(): void {
  if (registered) return;
  registered = true;
  tf.registerKernel({
    kernelName: GELU_KERNEL,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend }) => {
      const b = backend as unknown as WasmBackend;
      const x = inputs['x']!;
      float32(GELU_KERNEL, [x]);
      const y = b.makeOutput([...x.shape], 'float32');
      const d = b.makeOutput([...x.shape], 'float32');
      const n = tf.util.sizeFromShape(x.shape);
      exportsFor(b).gelu(offset(b, x, GELU_KERNEL), offset(b, y, GELU_KERNEL), offset(b, d, GELU_KERNEL), n);
      return [y, d];
    },
  });
  tf.registerKernel({
    kernelName: ADAMW_KERNEL,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const b = backend as unknown as WasmBackend;
      const ins = [inputs['p']!, inputs['m']!, inputs['v']!, inputs['g']!];
      float32(ADAMW_KERNEL, ins);
      const shape = [...ins[0]!.shape];
      const n = tf.util.sizeFromShape(shape);
      if (ins.some((t) => tf.util.sizeFromShape(t.shape) !== n)) throw new SimdKernelError(ADAMW_KERNEL, 'p, m, v and g must have the same size');
      const outs = [b.makeOutput(shape, 'float32'), b.makeOutput(shape, 'float32'), b.makeOutput(shape, 'float32')];
      const a = attrs as unknown as AdamWAttrs;
      const [p, m, v, g] = ins.map((t) => offset(b, t, ADAMW_KERNEL));
      const [p1, m1, v1] = outs.map((t) => offset(b, t, ADAMW_KERNEL));
      // The same scalars the tf-ops version multiplies by, each rounded to float32 by the call.
      exportsFor(b).adamw(
        p!,
        m!,
        v!,
        g!,
        p1!,
        m1!,
        v1!,
        n,
        a.b1,
        1 - a.b1,
        a.b2,
        1 - a.b2,
        Math.sqrt(1 - Math.pow(a.b2, a.step)),
        a.eps,
        a.wd === 0 || a.lr === 0 ? 1 : 1 - a.lr * a.wd,
        a.lr / (1 - Math.pow(a.b1, a.step)),
      );
      return outs;
    },
  });
  tf.registerKernel({
    kernelName: LION_KERNEL,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const b = backend as unknown as WasmBackend;
      const ins = [inputs['p']!, inputs['m']!, inputs['g']!];
      float32(LION_KERNEL, ins);
      const shape = [...ins[0]!.shape];
      const n = tf.util.sizeFromShape(shape);
      if (ins.some((t) => tf.util.sizeFromShape(t.shape) !== n)) throw new SimdKernelError(LION_KERNEL, 'p, m and g must have the same size');
      const outs = [b.makeOutput(shape, 'float32'), b.makeOutput(shape, 'float32')];
      const a = attrs as unknown as LionAttrs;
      const [p, m, g] = ins.map((t) => offset(b, t, LION_KERNEL));
      const [p1, m1] = outs.map((t) => offset(b, t, LION_KERNEL));
      exportsFor(b).lion(p!, m!, g!, p1!, m1!, n, a.b1, 1 - a.b1, a.b2, 1 - a.b2, a.wd === 0 || a.lr === 0 ? 1 : 1 - a.lr * a.wd, a.lr);
      return outs;
    },
  });
}

/** Whether GELU and AdamW run as SIMD kernels now (wasm backend, SIMD available, not switched off). */
export function simdKernelsActive(): boolean {
  return enabled && tf.getBackend() === 'wasm' && exportsOrNull(tf.backend() as unknown as WasmBackend) !== null;
}

/** Switch the SIMD kernels off (the tf-ops versions run), to compare. */
export function setSimdKernels(on: boolean): void {
  enabled = on;
}

/** GELU(x) and GELU'(x). */
export function geluAndDerivative(x: tf.Tensor): [tf.Tensor, tf.Tensor] {
  register();
  return tf.engine().runKernel(GELU_KERNEL, { x }) as unknown as [tf.Tensor, tf.Tensor];
}

/** Lion's new parameter and momentum. */
export function lionSimd(p: tf.Tensor, m: tf.Tensor, g: tf.Tensor, attrs: LionAttrs): [tf.Tensor, tf.Tensor] {
  register();
  return tf.engine().runKernel(LION_KERNEL, { p, m, g }, attrs as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor];
}

/** AdamW's new parameter and moments. */
export function adamwFused(p: tf.Tensor, m: tf.Tensor, v: tf.Tensor, g: tf.Tensor, attrs: AdamWAttrs): [tf.Tensor, tf.Tensor, tf.Tensor] {
  register();
  return tf.engine().runKernel(ADAMW_KERNEL, { p, m, v, g }, attrs as unknown as tf.NamedAttrMap) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor];
}
