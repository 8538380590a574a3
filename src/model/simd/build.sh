#!/bin/sh
# Rebuilds kernels.wasm from kernels.c. Not run by npm ci, tests or CI: the .wasm is committed.
# Toolchain: Debian bookworm clang 14 + lld (apt-get install -y clang lld). The module imports
# its memory (the tfjs wasm backend's) and must carry no data section and use no stack; the
# llvm-objdump check below fails the build if any function touches the stack pointer.
set -eu
cd "$(dirname "$0")"
clang --target=wasm32 -O3 -msimd128 -ffp-contract=off -nostdlib \
  -Wl,--no-entry -Wl,--import-memory -Wl,--strip-all \
  -o kernels.wasm kernels.c
if llvm-objdump -d kernels.wasm | grep -q 'global\.[gs]et'; then
  echo "kernels.wasm uses a global (the stack pointer): it would write into tfjs's heap" >&2
  exit 1
fi
chmod 644 kernels.wasm
ls -l kernels.wasm
