#!/usr/bin/env bash
# Tries the GPU check end to end on this machine as the GPU machine will run it: the tracked
# files copied into a temporary folder with no node_modules, the bundle beside them, Node.js
# and node_modules taken only from the bundle, the bundled Vulkan loader forced, and
# run-check.sh --tiny on whatever adapter is here (lavapipe is enough). Checks that every
# JSON line came and that the bundle's node and node_modules were the ones used.
# Usage: bash bench/gpu/try-here.sh   (after bash bench/gpu/make-bundle.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
[ -f .gpu-bundle/node.xz ] || { echo "try-here: no .gpu-bundle; run bash bench/gpu/make-bundle.sh first" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/repo"
# What the device tool sends: tracked and untracked-not-ignored files.
git ls-files -co --exclude-standard -z | (cd "$root" && xargs -0 cp --parents -t "$tmp/repo")
cp -a .gpu-bundle "$tmp/repo/.gpu-bundle"
cd "$tmp/repo"
[ ! -e node_modules ] || { echo "try-here: the copy has node_modules" >&2; exit 1; }
status=0
OUT=$tmp/out SMLP_GPU_WORK=$tmp/work SMLP_GPU_FORCE_BUNDLED_VULKAN=1 bash bench/gpu/run-check.sh --tiny || status=$?
echo "--- run-check.sh exit $status; checking its output" >&2
node - "$tmp/out/gpu-check.jsonl" "$tmp" <<'JS'
const [file, tmp] = process.argv.slice(2);
const lines = require('fs').readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const problems = [];
const find = (f) => lines.find(f);
const adapter = find((l) => l.check === 'adapter');
if (!adapter) problems.push('no adapter line');
else {
  if (!adapter.node.startsWith(`${tmp}/work/`)) problems.push(`node was ${adapter.node}, not the bundle's`);
  if (!adapter.webgpu_module.startsWith(`${tmp}/repo/node_modules/`)) problems.push(`webgpu loaded from ${adapter.webgpu_module}`);
  if (!String(adapter.env?.LD_LIBRARY_PATH ?? '').startsWith(`${tmp}/work/vulkan/`)) problems.push('the bundled Vulkan loader was not used');
  if (!adapter.adapter) problems.push(`no adapter found: ${JSON.stringify(adapter.webgpu)}`);
}
const wg = find((l) => l.bench === 'train' && l.backend === 'webgpu');
if (!wg || !(wg.images_per_sec > 0)) problems.push('no webgpu train result');
const pt = find((l) => l.bench === 'train' && l.impl === 'pytorch');
const ratio = find((l) => l.check === 'ratio');
if (pt && !ratio) problems.push('PyTorch ran but no ratio line');
const packed = find((l) => l.bench === 'upload' && l.path === 'uint8:packed');
const f32 = find((l) => l.bench === 'upload' && l.path === 'float32');
if (!packed || !f32) problems.push('no upload lines for float32 and uint8:packed');
else if (!(packed.measured_bytes_per_pixel < 1.1 && f32.measured_bytes_per_pixel === 4)) problems.push(`upload bytes: packed ${packed.measured_bytes_per_pixel}, float32 ${f32.measured_bytes_per_pixel} a pixel`);
const e2e = find((l) => l.bench === 'e2e');
if (!e2e || e2e.backend !== 'webgpu' || !(e2e.train_images_per_sec > 0)) problems.push('no e2e result on webgpu');
else if (e2e.frame_dtype !== 'uint8' || !(e2e.upload_bytes_per_update < e2e.float32_image_bytes_per_batch / 2)) problems.push(`e2e: frame ${e2e.frame_dtype}, ${e2e.upload_bytes_per_update} bytes an update`);
for (const l of lines.filter((x) => x.check === 'error')) problems.push(`error line: ${JSON.stringify(l)}`);
for (const l of lines) console.log(JSON.stringify(l));
if (problems.length) {
  console.error(`try-here: FAILED\n- ${problems.join('\n- ')}`);
  process.exit(1);
}
console.error(`try-here: ok (${lines.length} lines${pt ? '' : '; PyTorch absent here, no ratio line'})`);
JS
exit "$status"
