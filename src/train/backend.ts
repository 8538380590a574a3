// Picks the TensorFlow.js backend: tfjs-node-gpu, webgpu, tfjs-node, wasm, cpu, in that order
// unless one is requested. The two native packages are optionalDependencies whose install drops
// them where libtensorflow cannot be downloaded; `require` then throws MODULE_NOT_FOUND, the
// signal to move on. Every skipped backend is reported with its reason. tfjs-node-gpu cannot be
// exercised on CPU-only machines, so it is only this seam: load the package, activate
// 'tensorflow', report. webgpu (Dawn's Node binding) is set up by ./backends/webgpu.ts: adapter
// policy, device limits.
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { formatAdapter, setupWebGpu } from './backends/webgpu.ts';
import { installWasmKernels, type WasmKernelSettings } from './wasm-kernels.ts';

export type BackendChoice = 'tfjs-node-gpu' | 'webgpu' | 'tfjs-node' | 'wasm' | 'cpu';
export const BACKEND_ORDER: readonly BackendChoice[] = ['tfjs-node-gpu', 'webgpu', 'tfjs-node', 'wasm', 'cpu'];

interface Candidate {
  /** npm package that registers the backend (the umbrella package already has cpu). */
  pkg: string | null;
  /** Name the backend registers under in tfjs. */
  tfName: string;
}

const CANDIDATES: Record<BackendChoice, Candidate> = {
  'tfjs-node-gpu': { pkg: '@tensorflow/tfjs-node-gpu', tfName: 'tensorflow' },
  // Loaded by setupWebGpu (an ES module, and globals must be in place first).
  webgpu: { pkg: null, tfName: 'webgpu' },
  'tfjs-node': { pkg: '@tensorflow/tfjs-node', tfName: 'tensorflow' },
  wasm: { pkg: '@tensorflow/tfjs-backend-wasm', tfName: 'wasm' },
  cpu: { pkg: null, tfName: 'cpu' },
};

export interface BackendSkip {
  backend: BackendChoice;
  reason: string;
}

export interface BackendSelection {
  backend: BackendChoice;
  /** tf.getBackend() after selection. */
  tfName: string;
  skipped: BackendSkip[];
  /** Things worth knowing about the chosen one (e.g. a GPU package running without a GPU). */
  notes: string[];
}

/** Injection points, so tests can simulate missing or broken packages. */
export interface BackendDeps {
  load(pkg: string): unknown;
  activate(tfName: string): Promise<boolean>;
  /** Called once the backend is active (installs the wasm kernel overrides); may return a note. */
  prepare(choice: BackendChoice, settings: BackendSettings): string | void;
  /**
   * Finds the WebGPU adapter and readies the 'webgpu' backend; returns a line describing the
   * adapter, or throws with the reason to skip (a software adapter unless requested by name).
   */
  setupWebGpu(requestedByName: boolean): Promise<string>;
}

/** How the chosen backend should run: BLAS threads for the wasm backend's matMuls. */
export type BackendSettings = Pick<WasmKernelSettings, 'threads'>;

export class BackendError extends Error {
  override readonly name = 'BackendError';
  constructor(
    readonly backend: BackendChoice | 'auto',
    readonly skipped: BackendSkip[],
  ) {
    super(`no usable TensorFlow.js backend (${backend}): ${skipped.map((s) => `${s.backend}: ${s.reason}`).join('; ')}`);
  }
}

const require = createRequire(import.meta.url);

export const defaultBackendDeps: BackendDeps = {
  load: (pkg) => require(pkg) as unknown,
  activate: async (name) => {
    const ok = await tf.setBackend(name);
    await tf.ready();
    return ok && tf.getBackend() === name;
  },
  prepare: (choice, settings) => {
    if (choice === 'wasm') return installWasmKernels(settings);
  },
  setupWebGpu: async (byName) => formatAdapter(await setupWebGpu(byName)),
};

function firstLine(s: string): string {
  const line = s.split('\n', 1)[0] ?? '';
  return line.length > 200 ? `${line.slice(0, 200)}...` : line;
}

/** Why loading `pkg` failed, in a few words. */
export function classifyLoadError(pkg: string, e: unknown): string {
  const err = e as { code?: unknown; message?: unknown };
  const msg = typeof err?.message === 'string' ? err.message : String(e);
  if (err?.code === 'MODULE_NOT_FOUND' || err?.code === 'ERR_MODULE_NOT_FOUND') {
    // Only "this package is absent" counts as missing; a missing dependency of it is a broken install.
    return msg.includes(`'${pkg}'`) || msg.includes(`"${pkg}"`) || msg.includes(`${pkg}/`)
      ? 'module missing (not installed)'
      : `failed to load: ${firstLine(msg)}`;
  }
  return `failed to load: ${firstLine(msg)}`;
}

function isGpuInactive(): boolean {
  // tfjs-node's backend exposes whether TensorFlow found a GPU device.
  const b = tf.backend() as { isUsingGpuDevice?: boolean };
  return b.isUsingGpuDevice === false;
}

/** Selects and activates a backend; `requested` other than 'auto' means that one or an error. */
export async function selectBackend(
  requested: BackendChoice | 'auto' = 'auto',
  deps: Partial<BackendDeps> = {},
  settings: BackendSettings = {},
): Promise<BackendSelection> {
  const d: BackendDeps = { ...defaultBackendDeps, ...deps };
  const order = requested === 'auto' ? BACKEND_ORDER : [requested];
  const skipped: BackendSkip[] = [];
  for (const choice of order) {
    const c = CANDIDATES[choice];
    const notes: string[] = [];
    if (choice === 'webgpu') {
      try {
        notes.push(`webgpu: ${await d.setupWebGpu(requested === 'webgpu')}`);
      } catch (e) {
        skipped.push({ backend: choice, reason: firstLine((e as Error).message ?? String(e)) });
        continue;
      }
    }
    if (c.pkg) {
      try {
        d.load(c.pkg);
      } catch (e) {
        skipped.push({ backend: choice, reason: classifyLoadError(c.pkg, e) });
        continue;
      }
    }
    let active = false;
    try {
      active = await d.activate(c.tfName);
    } catch (e) {
      skipped.push({ backend: choice, reason: `failed to initialise: ${firstLine((e as Error).message ?? String(e))}` });
      continue;
    }
    if (!active) {
      skipped.push({ backend: choice, reason: `loaded, but tfjs backend '${c.tfName}' did not initialise` });
      continue;
    }
    const prepared = d.prepare(choice, settings);
    if (choice === 'tfjs-node-gpu' && isGpuInactive()) notes.push('tfjs-node-gpu loaded but TensorFlow sees no GPU: running on the CPU');
    if (choice === 'wasm') notes.push(prepared || 'wasm: single-threaded in Node; transposed matMuls rerouted to XNNPACK');
    return { backend: choice, tfName: c.tfName, skipped, notes };
  }
  throw new BackendError(requested, skipped);
}

export function describeSelection(s: BackendSelection): string {
  const parts = [`backend: ${s.backend}`];
  for (const k of s.skipped) parts.push(`${k.backend} skipped (${k.reason})`);
  for (const n of s.notes) parts.push(n);
  return parts.join('; ');
}
