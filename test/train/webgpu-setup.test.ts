// The WebGPU set-up without a GPU: adapter policy (hardware only in automatic selection, a
// software adapter only by name), the device's raised limits, skip reasons, its place in the
// automatic order, and the GPU-memory statement with its per-binding limit check. Dawn and
// tfjs-backend-webgpu are replaced by fakes; the real adapter is exercised in webgpu-*.test.ts.
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { parseArch } from '../../src/model/arch.ts';
import { estimateTrainBytes } from '../../src/model/layout.ts';
import { BACKEND_ORDER, selectBackend, type BackendDeps } from '../../src/train/backend.ts';
import {
  adapterRefusal,
  describeAdapter,
  formatAdapter,
  largestStepTensor,
  RAISED_LIMITS,
  releaseWebGpu,
  setupWebGpu,
  webGpuMemoryLine,
  WebGpuLimitError,
  WebGpuUnavailableError,
  type AdapterDescription,
  type WebGpuDeps,
} from '../../src/train/backends/webgpu.ts';

const LAVAPIPE = {
  vendor: 'mesa',
  architecture: 'software',
  device: 'llvmpipe-llvm-15-0-6-256-bits-',
  description: 'llvmpipe: Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6) 0.0.1',
  isFallbackAdapter: true,
};
const NVIDIA = { vendor: 'nvidia', architecture: 'hopper', device: '', description: 'NVIDIA H200', isFallbackAdapter: false };
const LIMITS = {
  maxBufferSize: 2 ** 32 - 1,
  maxStorageBufferBindingSize: 2 ** 27,
  maxStorageBuffersPerShaderStage: 16,
  maxComputeWorkgroupStorageSize: 32768,
  maxComputeWorkgroupsPerDimension: 65535,
  maxComputeWorkgroupSizeX: 1024,
  maxComputeInvocationsPerWorkgroup: 1024,
  maxBindGroups: 4,
};

t.test('adapter policy: hardware always, software (fallback) only when asked for by name', async (t) => {
  const soft = describeAdapter(LAVAPIPE, LIMITS);
  const hard = describeAdapter(NVIDIA, { ...LIMITS, maxStorageBufferBindingSize: 2 ** 32 - 4 });
  t.same(soft, {
    vendor: 'mesa',
    architecture: 'software',
    device: LAVAPIPE.device,
    description: LAVAPIPE.description,
    fallback: true,
    maxBufferSize: 2 ** 32 - 1,
    maxStorageBufferBindingSize: 2 ** 27,
  });
  t.equal(hard.fallback, false);
  t.match(adapterRefusal(soft, false), /^only a software adapter \(mesa llvmpipe: Mesa 25/);
  t.match(adapterRefusal(soft, false), /used only with --backend webgpu/);
  t.equal(adapterRefusal(soft, true), null);
  t.equal(adapterRefusal(hard, false), null);
  // Either signal marks a software adapter: the spec's flag, the older adapter-level flag, or
  // Dawn's 'software' architecture.
  t.equal(describeAdapter({ ...LAVAPIPE, isFallbackAdapter: undefined }, LIMITS).fallback, true);
  t.equal(describeAdapter({ vendor: 'google', architecture: 'swiftshader' }, LIMITS, true).fallback, true);
  t.equal(describeAdapter({}, {}).fallback, false);
  t.equal(
    formatAdapter(soft),
    'software adapter mesa software "llvmpipe: Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6) 0.0.1", buffers up to 4.00 GiB, bindings up to 128.0 MiB',
  );
  t.match(formatAdapter(hard), /^hardware adapter nvidia hopper "NVIDIA H200", buffers up to 4\.00 GiB, bindings up to 4\.00 GiB$/);
});

/** A fake Dawn: one adapter (or none), recording what the device was asked for. */
function fakeDawn(info: object | null, limits: Record<string, number> = LIMITS) {
  const requests: { requiredLimits?: Record<string, number>; requiredFeatures?: string[] }[] = [];
  let destroyed = 0;
  const device = {
    lost: new Promise<{ reason: string }>(() => {}),
    addEventListener: () => {},
    limits,
    destroy: () => void destroyed++,
  };
  const adapter = info && {
    info,
    limits,
    requestDevice: async (d: (typeof requests)[number]) => {
      requests.push(d);
      return device;
    },
  };
  class FakeBackend {}
  const deps: WebGpuDeps = {
    loadDawn: async () => ({ create: () => ({ requestAdapter: async () => adapter }), globals: { GPUBufferUsage: { STORAGE: 128 } } }),
    loadTfjsWebGpu: () => ({ WebGPUBackend: FakeBackend as never }),
  };
  return { deps, requests, destroyed: () => destroyed };
}

t.test("setupWebGpu: software adapter refused in auto, accepted by name; device with the adapter's limits, created once", async (t) => {
  t.teardown(releaseWebGpu);
  const f = fakeDawn(LAVAPIPE);
  const e = await setupWebGpu(false, f.deps).catch((x: unknown) => x);
  t.type(e, WebGpuUnavailableError);
  t.match(e, { kind: 'software-adapter', adapter: { fallback: true } });
  t.equal(f.requests.length, 0, 'no device for a refused adapter');
  t.equal((globalThis as { GPUBufferUsage?: unknown }).GPUBufferUsage !== undefined, true, "Dawn's globals installed");
  t.ok((globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu, 'navigator.gpu set (before tfjs-backend-webgpu loads)');

  const a = await setupWebGpu(true, f.deps);
  t.equal(a.description, LAVAPIPE.description);
  t.equal(f.requests.length, 1);
  const want: Record<string, number> = {};
  for (const k of RAISED_LIMITS) want[k] = LIMITS[k];
  t.same(f.requests[0]!.requiredLimits, want, "every raised limit is the adapter's maximum");
  t.same(f.requests[0]!.requiredFeatures, []);
  t.ok(tf.findBackendFactory('webgpu'), "tfjs 'webgpu' registered on our device");
  await setupWebGpu(true, f.deps);
  t.equal(f.requests.length, 1, 'idempotent: one device per process');

  releaseWebGpu();
  t.equal(f.destroyed(), 1, 'release destroys the device');
  t.notOk(tf.findBackendFactory('webgpu'), 'and removes the backend');
  t.notOk((globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu, 'and drops navigator.gpu (Dawn would keep the process alive)');
});

t.test('setupWebGpu: hardware adapter accepted in auto; no adapter and a missing package are skip reasons', async (t) => {
  t.teardown(releaseWebGpu);
  const hw = fakeDawn(NVIDIA);
  t.match(await setupWebGpu(false, hw.deps), { vendor: 'nvidia', fallback: false });
  releaseWebGpu();

  const none = fakeDawn(null);
  const e = await setupWebGpu(false, none.deps).catch((x: unknown) => x);
  t.match(e, { kind: 'no-adapter', message: /no WebGPU adapter found \(no Vulkan, Metal or D3D12 driver/ });

  const missing: Partial<WebGpuDeps> = {
    loadDawn: async () => {
      throw Object.assign(new Error("Cannot find package 'webgpu' imported from /x/webgpu.ts"), { code: 'ERR_MODULE_NOT_FOUND' });
    },
  };
  t.match(await setupWebGpu(false, missing).catch((x: unknown) => x), { kind: 'load', message: 'module missing (not installed)' });
  const broken: Partial<WebGpuDeps> = {
    loadDawn: async () => {
      throw new Error('libvulkan.so.1: cannot open shared object file');
    },
  };
  t.match(await setupWebGpu(false, broken).catch((x: unknown) => x), { kind: 'load', message: /^failed to load: libvulkan\.so\.1/ });
});

/** selectBackend with every package and the webgpu set-up simulated. */
function fakeSelection(webgpu: string | Error) {
  const loaded: string[] = [];
  const activated: string[] = [];
  const byName: boolean[] = [];
  const deps: BackendDeps = {
    load: (pkg) => {
      loaded.push(pkg);
      if (pkg === '@tensorflow/tfjs-backend-wasm') return {};
      throw Object.assign(new Error(`Cannot find module '${pkg}'`), { code: 'MODULE_NOT_FOUND' });
    },
    activate: async (name) => {
      activated.push(name);
      return true;
    },
    prepare: () => {},
    setupWebGpu: async (n) => {
      byName.push(n);
      if (webgpu instanceof Error) throw webgpu;
      return webgpu;
    },
  };
  return { deps, loaded, activated, byName };
}

t.test('order: tfjs-node-gpu, webgpu, tfjs-node, wasm, cpu; a usable adapter wins over everything after it', async (t) => {
  t.same(BACKEND_ORDER, ['tfjs-node-gpu', 'webgpu', 'tfjs-node', 'wasm', 'cpu']);
  const f = fakeSelection('hardware adapter nvidia hopper "NVIDIA H200"');
  const s = await selectBackend('auto', f.deps);
  t.equal(s.backend, 'webgpu');
  t.equal(s.tfName, 'webgpu');
  t.same(f.byName, [false], 'automatic selection does not accept a software adapter');
  t.same(f.loaded, ['@tensorflow/tfjs-node-gpu'], 'tfjs-node and wasm not even loaded');
  t.same(f.activated, ['webgpu']);
  t.same(s.skipped, [{ backend: 'tfjs-node-gpu', reason: 'module missing (not installed)' }]);
  t.same(s.notes, ['webgpu: hardware adapter nvidia hopper "NVIDIA H200"']);
});

t.test('a software-only machine: webgpu skipped with its reason in auto, used when requested', async (t) => {
  const why = new WebGpuUnavailableError('software-adapter', 'only a software adapter (mesa llvmpipe); it is used only with --backend webgpu');
  const f = fakeSelection(why);
  const s = await selectBackend('auto', f.deps);
  t.equal(s.backend, 'wasm');
  t.same(
    s.skipped.map((k) => k.backend),
    ['tfjs-node-gpu', 'webgpu', 'tfjs-node'],
  );
  t.equal(s.skipped[1]!.reason, 'only a software adapter (mesa llvmpipe); it is used only with --backend webgpu');
  t.notOk(f.activated.includes('webgpu'), 'never activated');

  const g = fakeSelection('software adapter mesa software "llvmpipe"');
  const r = await selectBackend('webgpu', g.deps);
  t.equal(r.backend, 'webgpu');
  t.same(g.byName, [true]);
  t.same(g.loaded, [], 'by name: nothing else tried');
  const h = fakeSelection(new WebGpuUnavailableError('no-adapter', 'no WebGPU adapter found'));
  await t.rejects(selectBackend('webgpu', h.deps), /no usable TensorFlow.js backend \(webgpu\): webgpu: no WebGPU adapter found/);
});

const B12 = parseArch('B_12-Wi_1024');
const IN21K = { res: 64, channels: 3, numClasses: 11230 };
const adapter = (binding: number): AdapterDescription => ({ ...describeAdapter(NVIDIA, {}), maxBufferSize: 2 ** 32 - 1, maxStorageBufferBindingSize: binding });

t.test("largest tensor of a step: the paper's batch is an 805 MB input", async (t) => {
  t.same(largestStepTensor(B12, IN21K, 16384), { name: 'the input batch (16384 x 12288 float32)', bytes: 16384 * 12288 * 4 });
  t.equal(16384 * 12288 * 4, 805306368);
  // A wide head on a small input: the logits are the largest.
  t.match(largestStepTensor(parseArch('B_2-Wi_64'), { res: 8, channels: 3, numClasses: 1000 }, 100), { name: /^the logits \(100 x 1000/, bytes: 400000 });
  t.match(largestStepTensor(parseArch('B_2-Wi_256'), { res: 4, channels: 1, numClasses: 10 }, 8), {
    name: /^a hidden activation \(8 x 1024/,
    bytes: 8 * 1024 * 4,
  });
});

t.test('GPU memory statement: estimate and largest buffer within the binding limit', async (t) => {
  const line = webGpuMemoryLine(B12, IN21K, 16384, 1, 1, adapter(2 ** 32 - 4));
  const est = estimateTrainBytes(B12, IN21K, 16384, 1);
  t.match(line, /^webgpu: one step of batch 16384 needs ~[\d.]+ GiB of GPU memory \(estimate: WebGPU does not report the device's size\)/);
  t.ok(line.includes(`~${(est / 2 ** 30).toFixed(2)} GiB`), `${line} vs ${est}`);
  t.match(line, /largest buffer 768\.0 MiB, the input batch \(16384 x 12288 float32\), within the device's 4\.00 GiB per binding/);
  // Without a device (e.g. a dry run) the statement has no limit part.
  t.notMatch(webGpuMemoryLine(B12, IN21K, 1024, 1, 1, null), /per binding/);
});

t.test('a tensor over the binding limit stops the run with the --accum that fits', async (t) => {
  // lavapipe: 128 MiB per binding. 128 MiB / (12288 * 4 B) = 2730 samples; 16384 / 2730 -> 7.
  const e = (() => {
    try {
      webGpuMemoryLine(B12, IN21K, 16384, 1, 1, adapter(2 ** 27));
      return null;
    } catch (x) {
      return x;
    }
  })();
  t.type(e, WebGpuLimitError);
  t.match(e, { tensor: 'the input batch (16384 x 12288 float32)', bytes: 805306368, limit: 2 ** 27, suggestedAccum: 7 });
  t.match((e as Error).message, /needs 768\.0 MiB in one buffer, over this device's limit of 128\.0 MiB per storage binding; use --accum 7/);
  // Already accumulating 2 micro-batches of 8192: the total update stays 16384, so 7 again.
  t.throws(() => webGpuMemoryLine(B12, IN21K, 8192, 1, 2, adapter(2 ** 27)), /use --accum 7/);
  t.doesNotThrow(() => webGpuMemoryLine(B12, IN21K, 2730, 1, 7, adapter(2 ** 27)));
});
