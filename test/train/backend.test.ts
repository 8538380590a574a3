// Backend fallback order, with the package loader and backend activation injected so missing,
// broken and working packages can all be simulated on a CPU-only machine.
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { BACKEND_ORDER, BackendError, classifyLoadError, describeSelection, selectBackend, type BackendDeps } from '../../src/train/backend.ts';
import { wasmKernelsInstalled } from '../../src/train/wasm-kernels.ts';

function missing(pkg: string): Error {
  return Object.assign(new Error(`Cannot find module '${pkg}'\nRequire stack:\n- /x/backend.ts`), { code: 'MODULE_NOT_FOUND' });
}

/** A fake environment: which packages load, which backends activate; records what was tried. */
function fake(loadable: Record<string, Error | null>, activatable: Record<string, boolean | Error>) {
  const loaded: string[] = [];
  const activated: string[] = [];
  const prepared: string[] = [];
  const deps: BackendDeps = {
    load: (pkg) => {
      loaded.push(pkg);
      const e = pkg in loadable ? loadable[pkg] : missing(pkg);
      if (e) throw e;
      return {};
    },
    activate: async (name) => {
      activated.push(name);
      const r = activatable[name] ?? false;
      if (r instanceof Error) throw r;
      return r;
    },
    prepare: (c) => void prepared.push(c),
    setupWebGpu: async () => {
      throw new Error('no WebGPU adapter found');
    },
  };
  return { deps, loaded, activated, prepared };
}

t.test('order is tfjs-node-gpu, webgpu, tfjs-node, wasm, cpu', async (t) => {
  t.same(BACKEND_ORDER, ['tfjs-node-gpu', 'webgpu', 'tfjs-node', 'wasm', 'cpu']);
});

t.test('native packages missing, no WebGPU adapter: wasm, with every skip explained', async (t) => {
  const f = fake({ '@tensorflow/tfjs-backend-wasm': null }, { wasm: true });
  const s = await selectBackend('auto', f.deps);
  t.equal(s.backend, 'wasm');
  t.same(f.loaded, ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node', '@tensorflow/tfjs-backend-wasm']);
  t.same(s.skipped, [
    { backend: 'tfjs-node-gpu', reason: 'module missing (not installed)' },
    { backend: 'webgpu', reason: 'no WebGPU adapter found' },
    { backend: 'tfjs-node', reason: 'module missing (not installed)' },
  ]);
  t.same(f.prepared, ['wasm']);
  t.match(describeSelection(s), /backend: wasm; tfjs-node-gpu skipped \(module missing/);
});

t.test('GPU package present and working: it wins, nothing else is loaded', async (t) => {
  const f = fake({ '@tensorflow/tfjs-node-gpu': null }, { tensorflow: true });
  const s = await selectBackend('auto', f.deps);
  t.equal(s.backend, 'tfjs-node-gpu');
  t.equal(s.tfName, 'tensorflow');
  t.same(f.loaded, ['@tensorflow/tfjs-node-gpu']);
  t.same(s.skipped, []);
});

t.test('GPU package broken (e.g. no CUDA libraries): failed to load, then tfjs-node', async (t) => {
  const broken = new Error('libcudart.so.11.0: cannot open shared object file: No such file or directory');
  const f = fake({ '@tensorflow/tfjs-node-gpu': broken, '@tensorflow/tfjs-node': null }, { tensorflow: true });
  const s = await selectBackend('auto', f.deps);
  t.equal(s.backend, 'tfjs-node');
  t.match(s.skipped[0]!.reason, /^failed to load: libcudart\.so\.11\.0/);
});

t.test('a missing dependency inside a present package is "failed to load", not "missing"', async (t) => {
  t.equal(classifyLoadError('@tensorflow/tfjs-node', missing('@tensorflow/tfjs-node')), 'module missing (not installed)');
  t.match(
    classifyLoadError('@tensorflow/tfjs-node', missing('/x/node_modules/@tensorflow/tfjs-node/lib/napi-v8/tfjs_binding.node')),
    /module missing|failed to load/,
  );
  t.match(classifyLoadError('@tensorflow/tfjs-node', missing('adm-zip')), /^failed to load: Cannot find module 'adm-zip'/);
  t.match(classifyLoadError('x', new TypeError('boom')), /^failed to load: boom/);
});

t.test('wasm initialisation failing falls through to cpu', async (t) => {
  const f = fake({ '@tensorflow/tfjs-backend-wasm': null }, { wasm: new Error('WebAssembly.instantiate(): out of memory'), cpu: true });
  const s = await selectBackend('auto', f.deps);
  t.equal(s.backend, 'cpu');
  t.match(s.skipped[3]!, { backend: 'wasm', reason: /failed to initialise: WebAssembly/ });
  const g = fake({ '@tensorflow/tfjs-backend-wasm': null }, { wasm: false, cpu: true });
  t.match((await selectBackend('auto', g.deps)).skipped[3]!.reason, /did not initialise/);
});

t.test('an explicit request is that backend or an error naming the reason', async (t) => {
  const f = fake({}, {});
  await t.rejects(selectBackend('tfjs-node', f.deps), BackendError);
  t.same(f.loaded, ['@tensorflow/tfjs-node'], 'no fallback when a backend was requested');
  await t.rejects(selectBackend('tfjs-node', f.deps), /tfjs-node: module missing/);
  const none = fake({}, {});
  await t.rejects(selectBackend('auto', none.deps), /no usable TensorFlow.js backend/);
});

t.test('on this machine: auto gives wasm with the kernel overrides, cpu on request', async (t) => {
  const s = await selectBackend('auto');
  t.equal(tf.getBackend(), s.tfName);
  if (s.backend === 'wasm') {
    t.ok(wasmKernelsInstalled());
    // webgpu is skipped here: no adapter, or only a software one (lavapipe), which auto refuses.
    t.same(
      s.skipped.map((k) => k.backend),
      ['tfjs-node-gpu', 'webgpu', 'tfjs-node'],
    );
    t.match(s.skipped[1]!.reason, /no WebGPU adapter found|only a software adapter|failed to load/);
  } else {
    t.comment(`native backend present here: ${describeSelection(s)}`);
  }
  t.equal((await selectBackend('cpu')).backend, 'cpu');
  t.equal(tf.getBackend(), 'cpu');
});
