#!/usr/bin/env bash
# The GPU check, run on a machine without Node.js or a registry (the `device` tool's H200) from
# the repository root, with the bundle from bench/gpu/make-bundle.sh carried in .gpu-bundle/.
# Prints JSON lines (also written to $OUT/gpu-check.jsonl; the log to $OUT/gpu-check.log):
#   {"check":"adapter",...}   Node/Dawn found, the adapter (vendor, architecture, description,
#                             fallback), its limits, what --backend auto picks and why
#   {"bench":"train",...}     webgpu: images/s and GFLOP/s, data from memory; the bytes one
#                             float32 batch and one step copy to the device
#   {"bench":"upload",...}    one line per path (float32 batch, uint8 packed 4 pixels a word,
#                             uint8 through tfjs's bool route): ms per batch to the model's input
#                             on the device, and the bytes copied per batch, counted
#                             (upload_bytes_per_batch, measured_bytes_per_pixel)
#   {"bench":"train","impl":"pytorch",...}   PyTorch fp32 (TF32 off) on the same model and batch
#   {"check":"ratio",...}     webgpu / PyTorch images/s
#   {"bench":"e2e",...}       the trainer fed by the loader (shards -> workers -> ring) with uint8
#                             frames (packed upload): stall %, bytes copied per update
# Each step has its own time limit (full settings: at most 220 + 40 + 100 + 160 s; the real times
# are unmeasured), so the whole check ends inside a 580 s device call even when a step hangs.
# Usage: bash bench/gpu/run-check.sh [--tiny] [--workers N]
#   --tiny   small settings (B_1-Wi_64, 16x16, batch 256) to try the whole path on any adapter,
#            a software one included (lavapipe), and PyTorch on the CPU when there is no CUDA
# Environment: OUT (default ./gpu-check-out), SMLP_GPU_BUNDLE (default .gpu-bundle),
#   SMLP_GPU_WORK (unpack dir, default /tmp/smlp-gpu), SMLP_GPU_FORCE_BUNDLED_VULKAN=1,
#   SMLP_GPU_PYTHON (default python3: the one with PyTorch).
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

tiny=0
workers=12
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) tiny=1 ;;
    --workers) workers=$2; shift ;;
    *) echo "run-check: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

out=${OUT:-$root/gpu-check-out}
bundle=${SMLP_GPU_BUNDLE:-$root/.gpu-bundle}
work=${SMLP_GPU_WORK:-/tmp/smlp-gpu}
mkdir -p "$out" "$work"
jsonl=$out/gpu-check.jsonl
log=$out/gpu-check.log
: >"$jsonl"
: >"$log"
note() { echo "run-check: $*" | tee -a "$log" >&2; }
emit() { printf '%s\n' "$1" | tee -a "$jsonl"; }
fail() {
  emit "{\"check\":\"error\",\"step\":\"$1\",\"message\":\"$2\"}"
  exit 1
}

# xz is not on every image; Python's lzma is (the machine has PyTorch, so it has Python).
unxz_to() { # <file.xz> <dest>
  if command -v xz >/dev/null 2>&1; then xz -dc "$1" >"$2"; else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; fi
}

# --- unpack -----------------------------------------------------------------------------
[ -f "$bundle/node.xz" ] && [ -f "$bundle/node_modules.tar.xz" ] || fail unpack "no bundle in $bundle: run bash bench/gpu/make-bundle.sh where Node.js and npm are, and carry .gpu-bundle"
node=$work/node
if [ ! -x "$node" ]; then
  unxz_to "$bundle/node.xz" "$node.tmp" && chmod +x "$node.tmp" && mv "$node.tmp" "$node" || fail unpack "could not unpack node"
fi
if [ -e node_modules ] && [ ! -f node_modules/.from-gpu-bundle ]; then
  fail unpack "node_modules exists and is not from the bundle; run from a copy without node_modules"
fi
if [ ! -f node_modules/.from-gpu-bundle ]; then
  unxz_to "$bundle/node_modules.tar.xz" "$work/nm.tar" && tar -xf "$work/nm.tar" -C "$root" && rm -f "$work/nm.tar" || fail unpack "could not unpack node_modules"
  touch node_modules/.from-gpu-bundle
fi
note "node $("$node" --version) at $node; $(sed -n 1p "$bundle/MANIFEST" 2>/dev/null)"

# --- Vulkan loader and driver ------------------------------------------------------------
if [ "${SMLP_GPU_FORCE_BUNDLED_VULKAN:-0}" = 1 ] || ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  if command -v dpkg-deb >/dev/null 2>&1; then
    dpkg-deb -x "$bundle/libvulkan1.deb" "$work/vulkan"
  else
    (cd "$work" && ar x "$bundle/libvulkan1.deb" data.tar.xz && mkdir -p vulkan && tar -xJf data.tar.xz -C vulkan)
  fi
  export LD_LIBRARY_PATH="$work/vulkan/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  note "using the bundled Vulkan loader ($LD_LIBRARY_PATH)"
fi
tsx=(--import tsx)
adapter_line=$("$node" "${tsx[@]}" bench/gpu/adapter.ts 2>>"$log")
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if ! grep -q '"hardware":true' <<<"$adapter_line" && [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ]; then
  note "no hardware adapter with the default driver search; trying VK_DRIVER_FILES=$nvidia_icd"
  export VK_DRIVER_FILES=$nvidia_icd VK_ICD_FILENAMES=$nvidia_icd
  adapter_line=$("$node" "${tsx[@]}" bench/gpu/adapter.ts 2>>"$log")
fi
[ -n "$adapter_line" ] || fail adapter "bench/gpu/adapter.ts printed nothing (see $log)"
emit "$adapter_line"
if ! grep -q '"hardware":true' <<<"$adapter_line" && [ "$tiny" = 0 ]; then
  fail adapter "no hardware WebGPU adapter: the full check needs the GPU (--tiny runs on a software adapter)"
fi

# --- settings ---------------------------------------------------------------------------
if [ "$tiny" = 1 ]; then
  arch=B_1-Wi_64 res=16 classes=10 batch=256 steps=2 warm=1
  e2e=(--arch B_1-Wi_64 --res 16 --images 1024 --batch-size 256 --epochs 2 --workers 2)
  upload=(--batch-size 256 --res 16)
  t_train=300 t_upload=60 t_torch=120 t_e2e=300
else
  # The paper's pre-training model and batch at 64x64 (ImageNet-21k's 11,230 classes).
  arch=B_12-Wi_1024 res=64 classes=11230 batch=16384 steps=5 warm=2
  e2e=(--arch B_12-Wi_1024 --res 64 --images 65536 --batch-size 16384 --epochs 2 --workers "$workers")
  upload=(--batch-size 16384 --res 64)
  t_train=220 t_upload=40 t_torch=100 t_e2e=160
fi

# --- webgpu training throughput -----------------------------------------------------------
note "webgpu train: $arch, batch $batch, ${res}x${res}, $classes classes"
wg=$(timeout "$t_train" "$node" "${tsx[@]}" bench/run.ts train --backend webgpu --arch "$arch" --res "$res" --num-classes "$classes" \
  --batch-size "$batch" --steps "$steps" --warmup-steps "$warm" --optimizer adamw --data uniform 2>>"$log" | tail -n 1)
[ -n "$wg" ] && emit "$wg" || emit "{\"check\":\"error\",\"step\":\"webgpu-train\",\"message\":\"no result (exit or timeout after ${t_train}s; see gpu-check.log)\"}"

# --- one batch to the model's input: float32 against uint8 packed (and tfjs's bool route) ----
note "upload: ${upload[*]}"
up=$(timeout "$t_upload" "$node" "${tsx[@]}" bench/run.ts upload --backends webgpu "${upload[@]}" --rounds 3 --paths float32,uint8:packed,uint8:bool 2>>"$log")
if [ -n "$up" ]; then
  while IFS= read -r l; do emit "$l"; done <<<"$up"
else
  emit "{\"check\":\"error\",\"step\":\"upload\",\"message\":\"no result (exit or timeout after ${t_upload}s; see gpu-check.log)\"}"
fi

# --- PyTorch fp32 on the same model ---------------------------------------------------------
py=${SMLP_GPU_PYTHON:-python3}
if "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>>"$log"; then
  device=cuda
elif "$py" -c 'import torch' 2>/dev/null && [ "$tiny" = 1 ]; then
  device=cpu
else
  device=
fi
if [ -n "$device" ]; then
  note "pytorch ($device) train: $arch, batch $batch"
  pt=$(timeout "$t_torch" "$py" bench/torch_mlp.py --device "$device" --arch "$arch" --res "$res" --num-classes "$classes" \
    --batch-size "$batch" --steps "$((steps * 2))" --warmup "$warm" --optimizer adam 2>>"$log" | tail -n 1)
  [ -n "$pt" ] && emit "$pt" || emit "{\"check\":\"error\",\"step\":\"torch-train\",\"message\":\"no result (see gpu-check.log)\"}"
  if [ -n "$wg" ] && [ -n "$pt" ]; then
    emit "$("$node" -e '
      const [w, p] = process.argv.slice(1).map((s) => JSON.parse(s));
      const r = w.images_per_sec / p.images_per_sec;
      console.log(JSON.stringify({ check: "ratio", arch: w.arch, batch_size: w.batch_size, webgpu_images_per_sec: w.images_per_sec,
        torch_images_per_sec: p.images_per_sec, torch_device: p.backend, ratio: Math.round(r * 1000) / 1000, target: 0.5, met: r >= 0.5 }));
    ' "$wg" "$pt")"
  fi
else
  emit '{"check":"torch","skipped":"no PyTorch with CUDA here"}'
fi

# --- end to end: the loader feeding the webgpu trainer ------------------------------------
note "e2e: ${e2e[*]}"
ee=$(timeout "$t_e2e" "$node" "${tsx[@]}" bench/run.ts e2e --backend webgpu --frame-dtype uint8 "${e2e[@]}" 2>>"$log" | tail -n 1)
[ -n "$ee" ] && emit "$ee" || emit "{\"check\":\"error\",\"step\":\"e2e\",\"message\":\"no result (exit or timeout after ${t_e2e}s; see gpu-check.log)\"}"
note "done: $jsonl"
