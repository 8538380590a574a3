#!/bin/sh
# Rebuilds augment.wasm from augment.c. Not run by npm ci, tests or CI: the .wasm is committed.
# Toolchain: Debian bookworm clang 14 + lld (apt-get install -y clang lld); any clang >= 13 with
# the wasm32 target and wasm-ld works. No libc, no wasi: the module imports nothing.
set -eu
cd "$(dirname "$0")"
clang --target=wasm32 -O3 -msimd128 -mbulk-memory -ffp-contract=off -nostdlib \
  -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=65536 \
  -Wl,--export=__heap_base -Wl,--initial-memory=1048576 \
  -o augment.wasm augment.c
chmod 644 augment.wasm
ls -l augment.wasm
