// The WebGPU backend: tfjs-backend-webgpu on Dawn's Node binding (npm `webgpu`, whose
// dawn.node ships inside the package: nothing downloaded at install). It runs on Vulkan
// (NVIDIA, AMD, Intel, and lavapipe in software), Metal and D3D12.
//
// Three things are done here rather than left to tfjs-backend-webgpu's own factory:
// - The adapter is chosen by policy: automatic selection takes only a hardware adapter; a
//   software one (lavapipe, any `isFallbackAdapter`) only when webgpu is asked for by name,
//   since it is ~15x slower than wasm and would otherwise win the automatic order.
// - The device is created with the adapter's largest buffer limits. The spec defaults (128 MiB
//   per storage binding, 256 MiB per buffer) are far below one batch at the paper's scale: a
//   16,384 x 12,288 float32 input alone is 805 MB.
// - Device errors are caught. WebGPU reports validation and out-of-memory errors only as
//   events, and tfjs never listens, so a buffer over a limit would silently compute garbage;
//   here every read-back (which the trainer does once per update) throws the first one.
//
// Dawn needs its globals (GPUBufferUsage, ...) and `navigator.gpu` in place before
// tfjs-backend-webgpu is loaded: its module registers a backend only when navigator.gpu exists.
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { inputDim, type ArchSpec, type ModelShape } from '../../model/arch.ts';
import { estimateTrainBytes } from '../../model/layout.ts';

/** What the run prints about the adapter, and the limits that bound a batch. */
export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A software adapter (lavapipe, SwiftShader) or one the implementation marks as fallback. */
  fallback: boolean;
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
}

/** The reasons webgpu is not used, each a skip reason the selection prints. */
export class WebGpuUnavailableError extends Error {
  override readonly name = 'WebGpuUnavailableError';
  constructor(
    readonly kind: 'load' | 'no-adapter' | 'software-adapter' | 'device',
    reason: string,
    readonly adapter?: AdapterDescription,
  ) {
    super(reason);
  }
}

/** A device error (validation, out of memory, device lost) surfaced at the next read-back. */
export class WebGpuDeviceError extends Error {
  override readonly name = 'WebGpuDeviceError';
  constructor(
    readonly kind: string,
    readonly detail: string,
  ) {
    super(`webgpu ${kind}: ${detail}`);
  }
}

/** One tensor of the step would not fit in a single WebGPU buffer binding of this device. */
export class WebGpuLimitError extends Error {
  override readonly name = 'WebGpuLimitError';
  constructor(
    readonly tensor: string,
    readonly bytes: number,
    readonly limit: number,
    readonly suggestedAccum: number,
  ) {
    super(
      `webgpu: ${tensor} needs ${mib(bytes)} in one buffer, over this device's limit of ${mib(limit)} per storage binding; ` +
        `use --accum ${suggestedAccum} (or a smaller --batch-size)`,
    );
  }
}

/** The subset of Dawn's GPUAdapterInfo read here (fields vary across versions). */
interface AdapterInfoLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}

interface LimitsLike {
  [name: string]: number | undefined;
}

interface AdapterLike {
  info?: AdapterInfoLike;
  /** Older spec versions exposed these instead of `info`. */
  isFallbackAdapter?: boolean;
  requestAdapterInfo?: () => Promise<AdapterInfoLike>;
  limits: LimitsLike;
  requestDevice(descriptor: { requiredLimits?: Record<string, number>; requiredFeatures?: string[] }): Promise<DeviceLike>;
}

interface DeviceLike {
  lost: Promise<{ reason?: string; message?: string }>;
  addEventListener?(type: 'uncapturederror', listener: (ev: { error?: { message?: string; constructor?: { name?: string } } }) => void): void;
  onuncapturederror?: ((ev: { error?: { message?: string; constructor?: { name?: string } } }) => void) | null;
  destroy(): void;
}

interface GpuLike {
  requestAdapter(options?: { powerPreference?: 'high-performance' | 'low-power' }): Promise<AdapterLike | null>;
}

interface DawnModule {
  create(options: string[]): GpuLike;
  globals: object;
}

/** tfjs-backend-webgpu's exports used here. */
interface TfjsWebGpuModule {
  WebGPUBackend: new (device: DeviceLike, adapterInfo?: AdapterInfoLike) => tf.KernelBackend & { read(dataId: object): Promise<tf.backend_util.BackendValues> };
}

/** Injection points, so the policy can be tested without a GPU. */
export interface WebGpuDeps {
  loadDawn(): Promise<DawnModule>;
  loadTfjsWebGpu(): TfjsWebGpuModule;
}

const require = createRequire(import.meta.url);

export const defaultWebGpuDeps: WebGpuDeps = {
  loadDawn: async () => (await import('webgpu')) as unknown as DawnModule,
  loadTfjsWebGpu: () => require('@tensorflow/tfjs-backend-webgpu') as TfjsWebGpuModule,
};

/** Limits raised to the adapter's maximum when the device is created (tfjs asks for the same). */
export const RAISED_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeWorkgroupsPerDimension',
  'maxComputeWorkgroupSizeX',
  'maxComputeInvocationsPerWorkgroup',
] as const;

/** Extra Dawn options for `create()`, space-separated (e.g. `backend=vulkan adapter=NVIDIA...`). */
export const DAWN_OPTIONS_ENV = 'SMLP_DAWN_OPTIONS';

interface State {
  dawn: DawnModule;
  gpu: GpuLike;
  adapter: AdapterLike;
  description: AdapterDescription;
  device: DeviceLike | null;
  errors: WebGpuDeviceError[];
}

let state: State | null = null;

function mib(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  return bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${(bytes / 2 ** 10).toFixed(1)} KiB`;
}

/** The adapter's identity and limits in one flat record. */
export function describeAdapter(info: AdapterInfoLike, limits: LimitsLike, isFallback?: boolean): AdapterDescription {
  const architecture = info.architecture ?? '';
  return {
    vendor: info.vendor ?? '',
    architecture,
    device: info.device ?? '',
    description: info.description ?? '',
    // Dawn marks lavapipe and SwiftShader as fallback adapters; 'software' is what it reports
    // as their architecture, kept as a second signal for versions without the flag.
    fallback: info.isFallbackAdapter === true || isFallback === true || architecture === 'software',
    maxBufferSize: limits['maxBufferSize'] ?? 0,
    maxStorageBufferBindingSize: limits['maxStorageBufferBindingSize'] ?? 0,
  };
}

export function formatAdapter(a: AdapterDescription): string {
  const name = [a.vendor, a.architecture].filter(Boolean).join(' ') || 'unknown vendor';
  return (
    `${a.fallback ? 'software' : 'hardware'} adapter ${name}` +
    (a.description ? ` "${a.description}"` : a.device ? ` "${a.device}"` : '') +
    `, buffers up to ${mib(a.maxBufferSize)}, bindings up to ${mib(a.maxStorageBufferBindingSize)}`
  );
}

/**
 * Whether an adapter may be used: a hardware one always; a software one only when webgpu was
 * requested by name. Returns the skip reason, or null when it may be used.
 */
export function adapterRefusal(a: AdapterDescription, requestedByName: boolean): string | null {
  if (!a.fallback || requestedByName) return null;
  return `only a software adapter (${[a.vendor, a.description || a.device].filter(Boolean).join(' ')}); it is used only with --backend webgpu`;
}

/** Why Dawn's binding did not load, in a few words. */
function loadReason(e: unknown): string {
  const err = e as { code?: unknown; message?: unknown };
  const msg = typeof err?.message === 'string' ? err.message.split('\n', 1)[0]! : String(e);
  if ((err?.code === 'ERR_MODULE_NOT_FOUND' || err?.code === 'MODULE_NOT_FOUND') && /['"]webgpu['"]/.test(msg)) return 'module missing (not installed)';
  return `failed to load: ${msg.length > 200 ? `${msg.slice(0, 200)}...` : msg}`;
}

/** Puts Dawn's globals and navigator.gpu in place (Node 20 has no navigator; Node 21+ does). */
function installGlobals(dawn: DawnModule, gpu: GpuLike): void {
  Object.assign(globalThis, dawn.globals);
  const g = globalThis as { navigator?: object };
  if (g.navigator === undefined) g.navigator = {};
  Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true, writable: true, enumerable: true });
}

function dawnOptions(): string[] {
  return (process.env[DAWN_OPTIONS_ENV] ?? '').split(/\s+/).filter(Boolean);
}

/**
 * Loads Dawn, picks the adapter and (when it is acceptable) creates the device and registers the
 * tfjs 'webgpu' backend on it. Throws WebGpuUnavailableError with the reason to skip otherwise.
 * Idempotent: the adapter is requested once per process, the device created once.
 */
export async function setupWebGpu(requestedByName: boolean, deps: Partial<WebGpuDeps> = {}): Promise<AdapterDescription> {
  const d: WebGpuDeps = { ...defaultWebGpuDeps, ...deps };
  if (!state) {
    let dawn: DawnModule;
    try {
      dawn = await d.loadDawn();
    } catch (e) {
      throw new WebGpuUnavailableError('load', loadReason(e));
    }
    const gpu = dawn.create(dawnOptions());
    installGlobals(dawn, gpu);
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) {
      releaseGlobals();
      throw new WebGpuUnavailableError(
        'no-adapter',
        'no WebGPU adapter found (no Vulkan, Metal or D3D12 driver; on Linux a Vulkan ICD and libvulkan.so.1 are needed)',
      );
    }
    const info = adapter.info ?? (adapter.requestAdapterInfo ? await adapter.requestAdapterInfo() : {});
    state = { dawn, gpu, adapter, description: describeAdapter(info, adapter.limits, adapter.isFallbackAdapter), device: null, errors: [] };
  }
  const s = state;
  const refusal = adapterRefusal(s.description, requestedByName);
  if (refusal) throw new WebGpuUnavailableError('software-adapter', refusal, s.description);
  if (!s.device) {
    const requiredLimits: Record<string, number> = {};
    for (const k of RAISED_LIMITS) {
      const v = s.adapter.limits[k];
      if (v !== undefined) requiredLimits[k] = v;
    }
    let device: DeviceLike;
    try {
      device = await s.adapter.requestDevice({ requiredLimits, requiredFeatures: [] });
    } catch (e) {
      throw new WebGpuUnavailableError('device', `requestDevice failed: ${(e as Error).message ?? String(e)}`, s.description);
    }
    watchDevice(device, s.errors);
    s.device = device;
    registerTfjsBackend(d.loadTfjsWebGpu(), device, s);
  }
  return s.description;
}

function watchDevice(device: DeviceLike, errors: WebGpuDeviceError[]): void {
  const onError = (ev: { error?: { message?: string; constructor?: { name?: string } } }): void => {
    // Keep the first few: later ones are usually consequences of the first.
    if (errors.length < 8) errors.push(new WebGpuDeviceError(ev.error?.constructor?.name ?? 'error', ev.error?.message ?? 'unknown device error'));
  };
  if (device.addEventListener) device.addEventListener('uncapturederror', onError);
  else device.onuncapturederror = onError;
  void device.lost.then((info) => {
    if (info.reason !== 'destroyed') errors.push(new WebGpuDeviceError('device lost', info.message ?? info.reason ?? 'unknown'));
  });
}

/** Throws the first device error seen since the last check (and forgets it). */
export function throwIfWebGpuFailed(): void {
  const e = state?.errors.shift();
  if (e) {
    state!.errors.length = 0;
    throw e;
  }
}

function registerTfjsBackend(mod: TfjsWebGpuModule, device: DeviceLike, s: State): void {
  const Base = mod.WebGPUBackend;
  // Every read-back goes through read(); the trainer reads once per update, so a device error
  // surfaces at the update it spoiled.
  class CheckedWebGpuBackend extends Base {
    override async read(dataId: object): Promise<tf.backend_util.BackendValues> {
      const v = await super.read(dataId);
      throwIfWebGpuFailed();
      return v;
    }
  }
  const info = s.adapter.info ?? { vendor: s.description.vendor, architecture: s.description.architecture };
  // tfjs-backend-webgpu registered its own factory when loaded (navigator.gpu was set); it would
  // request an adapter of its own choosing with no error handling.
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new CheckedWebGpuBackend(device, info), 3);
  installAddNSplit();
}

let addNOriginal: tf.KernelConfig | null = null;

/**
 * tfjs-backend-webgpu's AddN binds every input in one shader, and a device allows only
 * maxStorageBuffersPerShaderStage bindings (8 by default, 16 on lavapipe): clipping's global
 * norm sums one term per parameter tensor (76 for B_12). Longer sums are done in chunks.
 */
function installAddNSplit(): void {
  if (addNOriginal) return;
  const original = tf.getKernel('AddN', 'webgpu');
  if (!original) return;
  addNOriginal = original;
  tf.unregisterKernel('AddN', 'webgpu');
  tf.registerKernel({
    ...original,
    kernelFunc: (args) => {
      const inputs = args.inputs as unknown as tf.TensorInfo[];
      const backend = args.backend as unknown as { device: { limits: LimitsLike }; disposeData(dataId: object): boolean };
      const maxIn = Math.max(2, (backend.device.limits['maxStorageBuffersPerShaderStage'] ?? 8) - 1);
      if (inputs.length <= maxIn) return original.kernelFunc(args);
      let level = inputs;
      while (level.length > maxIn) {
        const next: tf.TensorInfo[] = [];
        for (let i = 0; i < level.length; i += maxIn) {
          const chunk = level.slice(i, i + maxIn);
          next.push(chunk.length === 1 ? chunk[0]! : (original.kernelFunc({ ...args, inputs: chunk as unknown as tf.NamedTensorInfoMap }) as tf.TensorInfo));
        }
        // Partial sums made here are not engine tensors: free them once summed.
        for (const t of level) if (!inputs.includes(t) && !next.includes(t)) backend.disposeData(t.dataId);
        level = next;
      }
      const out = original.kernelFunc({ ...args, inputs: level as unknown as tf.NamedTensorInfoMap }) as tf.TensorInfo;
      for (const t of level) if (!inputs.includes(t)) backend.disposeData(t.dataId);
      return out;
    },
  });
}

/** The adapter in use, when webgpu was set up in this process. */
export function webGpuAdapter(): AdapterDescription | null {
  return state?.device ? state.description : null;
}

/**
 * Host copies of `tensors` fetched asynchronously, so that a following dataSync() on them
 * returns at once. tfjs-backend-webgpu's synchronous read needs OffscreenCanvas, which Node
 * lacks; an awaited data() caches the values on the tensor instead. A no-op elsewhere.
 */
export async function fetchToHost(tensors: Iterable<tf.Tensor>): Promise<void> {
  if (tf.getBackend() !== 'webgpu') return;
  await Promise.all([...tensors].map((t) => t.data()));
}

/** The largest single tensor of a training step, which must fit one storage binding. */
export function largestStepTensor(spec: ArchSpec, shape: ModelShape, microBatch: number): { name: string; bytes: number } {
  const d = inputDim(shape);
  const hidden = spec.kind === 'bottleneck' ? spec.expansion * spec.width : spec.width;
  const candidates: { name: string; bytes: number }[] = [
    { name: `the input batch (${microBatch} x ${d} float32)`, bytes: 4 * microBatch * d },
    { name: `a hidden activation (${microBatch} x ${hidden} float32)`, bytes: 4 * microBatch * hidden },
    { name: `the logits (${microBatch} x ${shape.numClasses} float32)`, bytes: 4 * microBatch * shape.numClasses },
    { name: `linear_in's weight (${d} x ${spec.width} float32)`, bytes: 4 * d * spec.width },
    { name: `linear_out's weight (${spec.width} x ${shape.numClasses} float32)`, bytes: 4 * spec.width * shape.numClasses },
  ];
  return candidates.reduce((a, b) => (b.bytes > a.bytes ? b : a));
}

/**
 * The GPU memory statement for a run: the estimated peak of one step and the largest single
 * buffer against the device's limits. Throws WebGpuLimitError when a tensor cannot be bound,
 * naming the --accum that would fit (WebGPU does not report the device's total memory).
 */
export function webGpuMemoryLine(
  spec: ArchSpec,
  shape: ModelShape,
  microBatch: number,
  optimizerSlots: number,
  accum: number,
  adapter: AdapterDescription | null = webGpuAdapter(),
): string {
  const bytes = estimateTrainBytes(spec, shape, microBatch, optimizerSlots);
  const big = largestStepTensor(spec, shape, microBatch);
  if (adapter) {
    const limit = Math.min(adapter.maxStorageBufferBindingSize || Infinity, adapter.maxBufferSize || Infinity);
    if (big.bytes > limit) {
      // Only the batch-proportional tensors shrink with --accum; a weight over the limit cannot.
      const perSample = big.bytes / microBatch;
      const fits = Math.floor(limit / perSample);
      const suggested = fits >= 1 && !big.name.includes('weight') ? Math.ceil((accum * microBatch) / fits) : accum;
      throw new WebGpuLimitError(big.name, big.bytes, limit, suggested);
    }
  }
  return (
    `webgpu: one step of batch ${microBatch} needs ~${mib(bytes)} of GPU memory (estimate: WebGPU does not report the device's size); ` +
    `largest buffer ${mib(big.bytes)}, ${big.name}` +
    (adapter ? `, within the device's ${mib(Math.min(adapter.maxStorageBufferBindingSize, adapter.maxBufferSize))} per binding` : '')
  );
}

/** Bytes the webgpu backend holds in GPU buffers (in use, and allocated including its pool). */
export function webGpuBytes(): { inUse: number; allocated: number } | null {
  if (tf.getBackend() !== 'webgpu') return null;
  const m = tf.memory() as { numBytesInGPU?: number; numBytesAllocatedInGPU?: number };
  return { inUse: m.numBytesInGPU ?? 0, allocated: m.numBytesAllocatedInGPU ?? 0 };
}

function releaseGlobals(): void {
  const nav = (globalThis as { navigator?: { gpu?: unknown } }).navigator;
  // Dawn keeps the process alive while the object from create() is reachable.
  if (nav && 'gpu' in nav) delete nav.gpu;
}

/**
 * Removes the tfjs backend, destroys the device and drops navigator.gpu, so the process can exit
 * without process.exit() (tests, benchmarks). The next setupWebGpu starts again.
 */
export function releaseWebGpu(): void {
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  state?.device?.destroy();
  state = null;
  releaseGlobals();
}
