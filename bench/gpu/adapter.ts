// The GPU check's first line: which Node.js and node_modules run, what WebGPU adapter Dawn
// finds (vendor, architecture, description, fallback or not, the limits that bound a batch),
// and what the automatic backend selection makes of it. One JSON line on stdout.
//   node --import tsx bench/gpu/adapter.ts
import { createRequire } from 'node:module';
import { describeSelection, selectBackend } from '../../src/train/backend.ts';
import { webGpuAdapter } from '../../src/train/backends/webgpu.ts';

const require = createRequire(import.meta.url);
const line: Record<string, unknown> = {
  check: 'adapter',
  node: process.execPath,
  node_version: process.version,
  webgpu_module: require.resolve('webgpu'),
  env: Object.fromEntries(
    ['VK_DRIVER_FILES', 'VK_ICD_FILENAMES', 'LD_LIBRARY_PATH', 'SMLP_DAWN_OPTIONS'].filter((k) => process.env[k]).map((k) => [k, process.env[k]]),
  ),
};
try {
  // What `--backend auto` would run on: a hardware adapter wins over tfjs-node and wasm.
  const auto = await selectBackend('auto');
  line['auto'] = { backend: auto.backend, skipped: auto.skipped, notes: auto.notes };
  line['auto_described'] = describeSelection(auto);
} catch (e) {
  line['auto'] = { error: (e as Error).message };
}
try {
  // By name: accepts a software adapter too, so the limits are printed whatever was found.
  const s = await selectBackend('webgpu');
  line['webgpu'] = { notes: s.notes };
  const a = webGpuAdapter();
  if (a) line['adapter'] = a;
} catch (e) {
  line['webgpu'] = { error: (e as Error).message };
}
line['hardware'] = (line['adapter'] as { fallback?: boolean } | undefined)?.fallback === false;
process.stdout.write(`${JSON.stringify(line)}\n`);
process.exit(0);
