#!/usr/bin/env bash
# Builds the carry bundle for the GPU check (bench/gpu/run-check.sh) on a machine with Node.js,
# npm and apt: the GPU machine the `device` tool lends has no Node.js, no registry and no
# network, and at most 64 MiB travels with the working tree. Writes .gpu-bundle/ (ignored):
#   node.xz               this machine's Node.js binary (linux-x64), xz-compressed
#   node_modules.tar.xz   the production node_modules (no dev dependencies, no tfjs-node*),
#                         pruned to linux-x64 and to the files Node loads
#   libvulkan1.deb        Debian's Vulkan loader, unpacked there only if the machine lacks one
#   MANIFEST              versions, sizes and the commit the bundle was made from
# Usage: bash bench/gpu/make-bundle.sh [out-dir]   (default .gpu-bundle; takes a few minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out=${1:-$root/.gpu-bundle}
[ "$(uname -m)" = x86_64 ] || { echo "make-bundle: the GPU machine is x86-64; build the bundle on one (this is $(uname -m))" >&2; exit 2; }
[ -d node_modules/webgpu ] || { echo "make-bundle: run npm ci first" >&2; exit 2; }
node=$(command -v node)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$out"
mkdir -p "$out"

echo "bundle: node $(node --version) from $node" >&2
xz -T0 -6 -c "$node" >"$out/node.xz"

# The production dependency tree as installed here (no network: `npm prune` would try to fetch
# the optional tfjs-node packages): every top-level package `npm ls --omit=dev` lists, with the
# node_modules nested in it.
echo "bundle: production node_modules" >&2
mkdir -p "$work/node_modules"
npm ls --omit=dev --all --parseable 2>/dev/null | sed "s|^$root/||" | grep '^node_modules/' | grep -v '^node_modules/.*/node_modules/' |
  while read -r rel; do cp -a --parents "$rel" "$work/"; done
nm=$work/node_modules
[ -d "$nm/webgpu" ] && [ -d "$nm/tsx" ] && [ -d "$nm/@tensorflow/tfjs-backend-webgpu" ] || { echo "make-bundle: npm ls did not list the production packages" >&2; exit 1; }
# tfjs-node(-gpu) cannot work there (their libtensorflow needs CUDA 11.2); keeping them out
# also keeps their download stubs out.
rm -rf "$nm/@tensorflow/tfjs-node" "$nm/@tensorflow/tfjs-node-gpu"
# Dawn for the other platforms (~110 MB).
for d in "$nm"/webgpu/dist/*; do [ "$(basename "$d")" = linux-x64 ] || rm -rf "$d"; done
# Node loads each @tensorflow package through its "main" CommonJS bundle; the per-file ES
# modules, browser bundles and source maps beside it are never read (~250 MB).
for pkg in "$nm"/@tensorflow/*; do
  main=$(node -p "require('$pkg/package.json').main || ''")
  [ -n "$main" ] || continue
  find "$pkg/dist" -type f ! -path "$pkg/$main" ! -name '*.wasm' -delete
  find "$pkg/dist" -type d -empty -delete
done
# Binaries for other platforms (sharp's and esbuild's come as one package per platform; npm
# installs the matching ones, glibc and musl alike). @img/colour is plain JS that sharp needs.
find "$nm/@img" -mindepth 1 -maxdepth 1 -type d -name 'sharp-*' ! -name '*-linux-x64' -exec rm -rf {} +
find "$nm/@esbuild" -mindepth 1 -maxdepth 1 -type d ! -name 'linux-x64' -exec rm -rf {} +
find "$nm" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.md' -o -name '*.markdown' \) -delete
find "$nm" -type d -empty -delete
tar -C "$work" -cf - node_modules | xz -T0 -6 >"$out/node_modules.tar.xz"

# The Vulkan loader (libvulkan.so.1): Dawn dlopens it; the NVIDIA driver brings only the ICD.
echo "bundle: libvulkan1" >&2
(cd "$work" && apt-get download libvulkan1 >/dev/null 2>&1) || { echo "make-bundle: apt-get download libvulkan1 failed (apt-get update first?)" >&2; exit 1; }
mv "$work"/libvulkan1_*.deb "$out/libvulkan1.deb"

{
  echo "made: $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "node: $(node --version)"
  echo "webgpu: $(node -p "require('$nm/webgpu/package.json').version")"
  echo "tfjs-backend-webgpu: $(node -p "require('$nm/@tensorflow/tfjs-backend-webgpu/package.json').version")"
  echo "libvulkan1: $(dpkg-deb -f "$out/libvulkan1.deb" Version)"
  echo "node_modules unpacked: $(du -sm "$nm" | cut -f1) MiB"
} >"$out/MANIFEST"
(cd "$out" && ls -l) >&2
total=$(du -sm "$out" | cut -f1)
echo "bundle: $out, ${total} MiB (the carry limit is 64 MiB with the working tree)" >&2
if [ "$total" -gt 60 ]; then echo "make-bundle: the bundle is over 60 MiB" >&2; exit 1; fi
