#!/bin/sh
# Rebuilds resample.wasm from resample.c. Not run by npm ci, tests or CI: the .wasm is committed.
# Toolchain: Debian bookworm clang 14 + lld (apt-get install -y clang lld); any clang >= 13 with
# the wasm32 target and wasm-ld works. No libc, no wasi: the module imports nothing.
set -eu
cd "$(dirname "$0")"
clang --target=wasm32 -O3 -msimd128 -mbulk-memory -ffp-contract=off -nostdlib \
  -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=65536 \
  -Wl,--export=__heap_base -Wl,--initial-memory=1048576 \
  -o resample.wasm resample.c
chmod 644 resample.wasm
ls -l resample.wasm
